/**
 * ONNX weight layouts: what a torch `nn.Linear.weight` `[N = out, K = in]` becomes in each ONNX export
 * (specs/onnx.md §0, §1.4, §2.1, §2.6, §3.4).
 *
 * 1. **com.microsoft MatMulNBits** (the q4 / q4f16 exports, and GenAI's int8): bits 4 or 8, block_size
 *    16/32/64/128 along K, symmetric (no zero_points input; the runtime's implied zero point is 2^(bits−1))
 *    or asymmetric (packed zero points), scales fp32 or fp16. The bytes equal what onnxruntime's
 *    `MatMulNBitsQuantizer` writes with its DEFAULT algorithm in QOperator format:
 *    `DefaultWeightOnlyQuantizer.qbits_block_quant` (onnxruntime/python/tools/quantization/
 *    matmul_nbits_quantizer.py) → `quantize_matmul_4bits` / `quantize_matmul_8bits`
 *    (onnxruntime_pybind_quant.cc `QuantizeMatMulNBitsBlockwise`) → `MlasQuantizeBlockwise<T, bits>` with
 *    columnwise = true (onnxruntime/core/mlas/lib/q4_dq.cpp, `BlockwiseQuantizer::quantizeAndTranspose`,
 *    `range2scale`, `range2scalezp`). Each rule below names the function it reproduces.
 * 2. **MatMulInteger** weights (the transformers.js "q8" export: DynamicQuantizeLinear + MatMulInteger,
 *    which ORT CPU fuses into DynamicQuantizeMatMul): int8 symmetric or uint8 asymmetric, per output
 *    channel (our recommendation, specs/onnx.md §3.4) or per tensor (transformers.js' default), as
 *    `quantize_dynamic` writes them: `ONNXQuantizer.quantize_weight_per_channel_impl` /
 *    `quantize_initializer_impl` → `quant_utils.quantize_data` → `compute_scale_zp` + `quantize_nparray`
 *    (onnxruntime/python/tools/quantization/quant_utils.py).
 *
 * The MatMulNBits kernel below is the reference; assembly/onnx.ts is its WebAssembly port (the same bytes,
 * test/quant-wasm-onnx.test.ts), used under the wasm backend when K is a multiple of the block size.
 *
 * MatMulNBits takes W exactly as torch stores it (row n of B is output n), so nothing is transposed;
 * MatMulInteger multiplies by B `[K, N]` (W^T), so its int8 matrix is written transposed.
 *
 * Why MatMulNBits 4-bit symmetric is not computed by ggml's Q4_0 kernel (legacy.ts), although
 * specs/onnx.md §2.1 calls the two numerically equal:
 * - the scale's sign on ties: MLAS keeps `fabsf(max) > fabsf(min) ? max : min`, so a block holding both +a
 *   and −a gets scale +a/8 (its negative end); `quantize_row_q4_0_ref` keeps whichever comes first;
 * - the scale the levels are computed against: Q4_0 stores d as fp16 but rounds x·(1/d) with the unrounded
 *   f32 d. MatMulNBits with fp32 scales stores that f32 d itself (a different scale tensor), and with fp16
 *   scales MLAS rounds the scale first and quantizes against the rounded value (different levels);
 * - the rounding expression: Q4_0 truncates x·id + 8.5, MLAS takes roundf(x·id + 8). Both are "half up"
 *   for the non-negative sums involved and give the same level for every float input (the test pins that
 *   on random and tie-heavy data);
 * - nibble order: Q4_0 puts element j with element j+16 in byte j; MatMulNBits puts adjacent pairs in a
 *   byte, low nibble first.
 * So only the fp32-scale levels agree with Q4_0, and only outside ±extreme ties; the scale tensor and the
 * fp16 path differ. One shared pass would need both scales and a tie fix-up, which costs more than the
 * second pass it saves. 8-bit differs outright: Q8_0 uses d = amax/127 with signed levels, MLAS uses
 * scale = −(signed extreme)/128 with levels 0..255 around 128. (A Q8_0 block can still be *transcoded*
 * losslessly to MatMulNBits bits=8 as level q+128 with scale d; ORT's quantizer never writes that.)
 */

import { ERROR_CODES, PolyquantError } from '../errors.js';
import * as float from '../tensor/float.js';
import * as common from './layout-common.js';
import { wasmMatMulNBitsQuantizer } from './wasm/runtime.js';

// Module-local aliases of the hot helpers (as legacy.ts does): under some loaders (tsx) every use of an
// imported binding is a getter call, which keeps V8 from inlining them into the per-element loops.
const { F16_TO_F32_VALUES, f32ToF16 } = float;
const { ceilDivide, checkOutputLength, checkRowRange, checkShape, checkWeightMatrix, checkWholeRows } = common;
const { clampLevel, FLT_MAX, FLT_MIN_NORMAL, roundHalfAwayFromZeroKeepingFloat, roundHalfToEven } = common;
const fround = Math.fround;

/** The float value of a float32 after a round trip through fp16 (MLFloat16's round-to-nearest-even). */
function roundToHalf(value: number): number {
  return F16_TO_F32_VALUES[f32ToF16(value)]!;
}

// ===================================================================================== MatMulNBits table

export type MatMulNBitsBits = 4 | 8;
export type MatMulNBitsBlockSize = 16 | 32 | 64 | 128;
export type OnnxScaleType = 'f32' | 'f16';

/** One row per bit width. Source: docs/ContribOperators.md (MatMulNBits) and MLAS `BitsTraits<bits, false>`. */
export interface MatMulNBitsBitWidth {
  readonly bits: MatMulNBitsBits;
  /** Quantized values per byte of B: 4-bit values go two to a byte, low nibble first. */
  readonly valuesPerByte: 1 | 2;
  /** The largest stored level, 2^bits − 1 (`BitsTraits::kMax`); the smallest is 0. */
  readonly maxLevel: number;
  /** The zero point the runtime implies when the zero_points input is absent: 2^(bits−1) (`kMid`). */
  readonly defaultZeroPoint: number;
}

export const MATMULNBITS_BIT_WIDTHS: Readonly<Record<MatMulNBitsBits, MatMulNBitsBitWidth>> = {
  4: { bits: 4, valuesPerByte: 2, maxLevel: 15, defaultZeroPoint: 8 },
  8: { bits: 8, valuesPerByte: 1, maxLevel: 255, defaultZeroPoint: 128 },
};

/**
 * The block sizes polyquant writes. ContribOperators.md allows any power of two ≥ 16; MLAS's quantizer
 * instantiates 16, 32, 64, 128 and 256 (`MlasQuantizeBlockwise`); these four are the ones the brief and the
 * GenAI builder use (its default is 32; GPTQ/HQQ default to 128).
 */
export const MATMULNBITS_BLOCK_SIZES: readonly MatMulNBitsBlockSize[] = [16, 32, 64, 128];

/** Scale dtypes: the `scales` input has the activation type T1 (specs/onnx.md §2.1); ONNX TensorProto.DataType ids. */
export const ONNX_SCALE_TYPES: Readonly<Record<OnnxScaleType, { readonly bytes: number; readonly onnxDataType: number }>> = {
  f32: { bytes: 4, onnxDataType: 1 /* FLOAT */ },
  f16: { bytes: 2, onnxDataType: 10 /* FLOAT16 */ },
};

export interface MatMulNBitsParams {
  readonly bits: MatMulNBitsBits;
  readonly blockSize: MatMulNBitsBlockSize;
  /** True: no zero_points input (zero point 2^(bits−1)); false: one zero point per block, packed. */
  readonly symmetric: boolean;
  readonly scaleType: OnnxScaleType;
}

export interface MatMulNBitsLayout extends MatMulNBitsParams {
  /** `onnx-q{bits}-b{blockSize}-{sym|asym}-{f32|f16}`. */
  readonly id: string;
  /** Bytes of B per block (MatMulNBits `blob_size` = block_size·bits/8). */
  readonly blobBytes: number;
  /** Bytes of one scale. */
  readonly scaleBytes: number;
  /** Bits of zero point per block: 0 when symmetric, else `bits` (4-bit zero points are packed two per byte). */
  readonly zeroPointBits: number;
}

export function matMulNBitsLayoutId(params: MatMulNBitsParams): string {
  return `onnx-q${params.bits}-b${params.blockSize}-${params.symmetric ? 'sym' : 'asym'}-${params.scaleType}`;
}

function buildMatMulNBitsLayouts(): readonly MatMulNBitsLayout[] {
  const layouts: MatMulNBitsLayout[] = [];
  for (const bits of [4, 8] as const) {
    for (const blockSize of MATMULNBITS_BLOCK_SIZES) {
      for (const symmetric of [true, false]) {
        for (const scaleType of ['f32', 'f16'] as const) {
          const params = { bits, blockSize, symmetric, scaleType };
          layouts.push(
            Object.freeze({
              ...params,
              id: matMulNBitsLayoutId(params),
              blobBytes: (blockSize * bits) / 8,
              scaleBytes: ONNX_SCALE_TYPES[scaleType].bytes,
              zeroPointBits: symmetric ? 0 : bits,
            }),
          );
        }
      }
    }
  }
  return Object.freeze(layouts);
}

/** Every MatMulNBits layout polyquant writes, derived from the three tables above. */
export const MATMULNBITS_LAYOUTS: readonly MatMulNBitsLayout[] = buildMatMulNBitsLayouts();

export const MATMULNBITS_LAYOUT_BY_ID: ReadonlyMap<string, MatMulNBitsLayout> = new Map(
  MATMULNBITS_LAYOUTS.map((layout) => [layout.id, layout]),
);

/**
 * Looks a layout up by id or by parameters; an unknown one is a USAGE error that lists what exists and,
 * when the caller passes the row length, names it with the block size (STYLE.md §9).
 */
export function matMulNBitsLayout(selector: string | MatMulNBitsParams, rowLength?: number): MatMulNBitsLayout {
  const id = typeof selector === 'string' ? selector : matMulNBitsLayoutId(selector);
  const layout = MATMULNBITS_LAYOUT_BY_ID.get(id);
  if (layout === undefined) {
    const blockSize = typeof selector === 'string' ? undefined : selector.blockSize;
    const context = [rowLength === undefined ? '' : `row length K = ${rowLength}`, blockSize === undefined ? '' : `block size ${blockSize}`]
      .filter((part) => part !== '')
      .join(', ');
    throw new PolyquantError(ERROR_CODES.USAGE, `unknown MatMulNBits layout ${JSON.stringify(id)}${context === '' ? '' : ` (${context})`}`, {
      hint: `bits 4 or 8, block size ${MATMULNBITS_BLOCK_SIZES.join('/')}, sym or asym, f32 or f16 scales, e.g. onnx-q4-b32-sym-f32`,
    });
  }
  return layout;
}

export interface MatMulNBitsShapes {
  readonly kBlocks: number;
  /** B: uint8 `[N, kBlocks, blobBytes]`. */
  readonly B: readonly [number, number, number];
  /** scales: T1 `[N·kBlocks]` (1-D, as the quantizer writes it; `[N, kBlocks]` is equivalent). */
  readonly scales: readonly [number];
  /** zero_points: uint8 `[N·zeroPointBytesPerRow]`, or null when symmetric. */
  readonly zeroPoints: readonly [number] | null;
  readonly zeroPointBytesPerRow: number;
}

export function matMulNBitsShapes(layout: MatMulNBitsLayout, N: number, K: number): MatMulNBitsShapes {
  const kBlocks = ceilDivide(K, layout.blockSize);
  const zeroPointBytesPerRow = layout.symmetric ? 0 : ceilDivide(kBlocks * layout.bits, 8);
  return {
    kBlocks,
    B: [N, kBlocks, layout.blobBytes],
    scales: [N * kBlocks],
    zeroPoints: layout.symmetric ? null : [N * zeroPointBytesPerRow],
    zeroPointBytesPerRow,
  };
}

/** Bytes of each initializer of a `[N, K]` weight in `layout`, derived from the table. */
export function matMulNBitsBytes(
  layout: MatMulNBitsLayout,
  N: number,
  K: number,
): { B: number; scales: number; zeroPoints: number; total: number } {
  const shapes = matMulNBitsShapes(layout, N, K);
  const B = N * shapes.kBlocks * layout.blobBytes;
  const scales = N * shapes.kBlocks * layout.scaleBytes;
  const zeroPoints = N * shapes.zeroPointBytesPerRow;
  return { B, scales, zeroPoints, total: B + scales + zeroPoints };
}

// ==================================================================================== MatMulNBits kernel

export interface MatMulNBitsTensor {
  readonly layout: MatMulNBitsLayout;
  readonly N: number;
  readonly K: number;
  readonly bits: MatMulNBitsBits;
  readonly blockSize: MatMulNBitsBlockSize;
  readonly kBlocks: number;
  /** uint8 `[N, kBlocks, blockSize·bits/8]`. */
  readonly B: Uint8Array;
  /** `[N·kBlocks]`: float32 values, or fp16 bits when the layout's scales are f16. */
  readonly scales: Float32Array | Uint16Array;
  /** uint8 `[N·ceil(kBlocks·bits/8)]`, only for asymmetric layouts. */
  readonly zeroPoints?: Uint8Array;
}

/** Allocates the (zeroed) initializers of a `[N, K]` weight in `layout`. */
export function createMatMulNBitsTensor(selector: string | MatMulNBitsParams, N: number, K: number): MatMulNBitsTensor {
  const layout = matMulNBitsLayout(selector, K);
  checkShape(layout.id, layout.blockSize, N, K);
  const shapes = matMulNBitsShapes(layout, N, K);
  const scaleCount = N * shapes.kBlocks;
  const tensor: MatMulNBitsTensor = {
    layout,
    N,
    K,
    bits: layout.bits,
    blockSize: layout.blockSize,
    kBlocks: shapes.kBlocks,
    B: new Uint8Array(N * shapes.kBlocks * layout.blobBytes),
    scales: layout.scaleType === 'f16' ? new Uint16Array(scaleCount) : new Float32Array(scaleCount),
  };
  return shapes.zeroPoints === null ? tensor : { ...tensor, zeroPoints: new Uint8Array(shapes.zeroPoints[0]) };
}

/**
 * MLAS's level for one value: `(uint8_t)std::clamp(roundf(v * reciprocal_scale + zp), 0.0f, kMaxFp)`
 * (quantizeAndTranspose). C evaluates it in float: the product rounds to float, then the sum (zp is an
 * int32 promoted to float); x86-64's baseline build has no FMA to fuse them. `roundf` rounds halves away
 * from zero. A NaN weight gives level 0: x86 converts NaN to 0x80000000, whose low byte is 0.
 */
export function nbitsLevel(value: number, reciprocal: number, zeroPoint: number, maxLevel: number): number {
  const shifted = fround(fround(value * reciprocal) + zeroPoint);
  return clampLevel(roundHalfAwayFromZeroKeepingFloat(shifted), 0, maxLevel, 0);
}

/**
 * Quantizes one row (K floats at `src[srcOffset…]`) into row `row` of `tensor`. Mirrors MLAS per block of
 * the row, where a block is `blockSize` consecutive elements of K and the last one may be short:
 * - min/max scan from ±FLT_MAX with `v < min` / `v > max` (NaN never wins);
 * - symmetric (`range2scale`): `max = fabsf(max) > fabsf(min) ? max : min; scale = -max / 2^(bits-1)`,
 *   so the largest magnitude maps to level 0, scales may be negative, and a tie picks the negative end;
 * - asymmetric (`range2scalezp`): `min = min(min, 0); max = max(max, 0); scale = (max - min) / kMax;
 *   zp = scale != 0 ? 0 - min/scale : min`, clamped into [0, kMax] and rounded with `roundf`, from the
 *   unrounded float scale;
 * - the scale is stored in the weight's type (`ScaleT(scale_f)`: fp16 rounds to nearest even) and the
 *   levels use `1.0f / stored` (0 when the stored scale is 0), so fp16 scales change the levels;
 * - fp16 scales mean an fp16 weight (`MlasQuantizeBlockwise<MLFloat16, bits>`, the GenAI builder's fp16
 *   path): every value is first rounded to fp16, as the initializer the quantizer reads would hold it.
 *   transformers.js' q4f16 instead quantizes in fp32 and casts the scales afterwards
 *   (`convert_float_to_float16`); that is `onnx-q4-b32-sym-f32` followed by an fp16 cast of `scales`.
 * - K not a multiple of the block: `qbits_block_quant` pads the weight with zero rows but passes the real
 *   K to MLAS, so the scan and the writes stop at K and the padding bytes stay as `np.zeros` made them: 0.
 *   If K is odd, MLAS still writes the last element's pair byte with its stale `vi[1]`: the level of
 *   element K−2, or 0 when K−1 starts a thread block (2·blockSize rows). MatMulNBits never reads it.
 * - 4-bit zero points go two per byte, low nibble first; with an odd kBlocks the unused high nibble of
 *   the row's last byte is 8 (`zp_bytes` is filled with kMid before each pair of blocks).
 */
/**
 * A block's unrounded scale from its value range, as MLAS computes it: range2scale (symmetric: the larger
 * magnitude, the negative end on a tie, over halfRange = kMid − kMin = 2^(bits−1)) or range2scalezp (the
 * range stretched to include 0, over fullRange = kMax − kMin). The GPTQ quantizer (gptq-layouts.ts) fits
 * its blocks with the same two functions.
 */
export function nbitsBlockScale(min: number, max: number, symmetric: boolean, bits: MatMulNBitsParams['bits']): number {
  const { maxLevel, defaultZeroPoint } = MATMULNBITS_BIT_WIDTHS[bits];
  if (symmetric) {
    const extreme = Math.abs(max) > Math.abs(min) ? max : min;
    return fround(-extreme / defaultZeroPoint);
  }
  // std::min(min, 0.0f) and std::max(max, 0.0f), kept as C's comparisons (they keep the first operand on ties).
  // biome-ignore lint/complexity/useMathMinMax: std::min semantics
  const low = 0 < min ? 0 : min;
  // biome-ignore lint/complexity/useMathMinMax: std::max semantics
  const high = max < 0 ? 0 : max;
  return fround(fround(high - low) / maxLevel);
}

/** The block's zero point for nbitsBlockScale's (unrounded) scale: kMid when symmetric, else range2scalezp's. */
export function nbitsBlockZeroPoint(min: number, scale: number, symmetric: boolean, bits: MatMulNBitsParams['bits']): number {
  const { maxLevel, defaultZeroPoint } = MATMULNBITS_BIT_WIDTHS[bits];
  if (symmetric) return defaultZeroPoint;
  // biome-ignore lint/complexity/useMathMinMax: std::min semantics
  const low = 0 < min ? 0 : min;
  const zeroPointFloat = scale !== 0 ? fround(-fround(low / scale)) : low;
  if (zeroPointFloat < 0) return 0;
  if (zeroPointFloat > maxLevel) return maxLevel;
  return roundHalfAwayFromZeroKeepingFloat(zeroPointFloat);
}

function quantizeMatMulNBitsRow(tensor: MatMulNBitsTensor, src: Float32Array, srcOffset: number, row: number): void {
  const { layout, K, kBlocks, B, scales } = tensor;
  const { bits, blockSize, symmetric, blobBytes } = layout;
  const { maxLevel, defaultZeroPoint } = MATMULNBITS_BIT_WIDTHS[bits];
  const halfInputs = layout.scaleType === 'f16';
  const halfScales = scales instanceof Uint16Array ? scales : null;
  const floatScales = scales instanceof Float32Array ? scales : null;
  const zeroPoints = tensor.zeroPoints ?? null;
  const zeroPointRowOffset = row * (bits === 4 ? ceilDivide(kBlocks, 2) : kBlocks);
  const threadBlockRows = 2 * blockSize;
  let previousLevel = 0;
  let pendingZeroPoint = 0;

  for (let block = 0; block < kBlocks; block++) {
    const start = block * blockSize;
    const count = Math.min(blockSize, K - start);
    const x = srcOffset + start;

    let min = FLT_MAX;
    let max = -FLT_MAX;
    for (let j = 0; j < count; j++) {
      const value = halfInputs ? roundToHalf(src[x + j]!) : src[x + j]!;
      if (value < min) min = value;
      if (value > max) max = value;
    }

    const scale = nbitsBlockScale(min, max, symmetric, bits);
    const zeroPoint = nbitsBlockZeroPoint(min, scale, symmetric, bits);

    const scaleIndex = row * kBlocks + block;
    let stored = scale;
    if (halfScales !== null) {
      const half = f32ToF16(scale);
      halfScales[scaleIndex] = half;
      stored = F16_TO_F32_VALUES[half]!;
    } else {
      floatScales![scaleIndex] = scale;
    }
    const reciprocal = stored !== 0 ? fround(1 / stored) : 0;

    if (zeroPoints !== null) {
      if (bits === 8) zeroPoints[zeroPointRowOffset + block] = zeroPoint;
      else if ((block & 1) === 0) pendingZeroPoint = zeroPoint;
      else zeroPoints[zeroPointRowOffset + (block >> 1)] = pendingZeroPoint | (zeroPoint << 4);
    }

    const out = (row * kBlocks + block) * blobBytes;
    if (bits === 8) {
      for (let j = 0; j < count; j++) {
        const value = halfInputs ? roundToHalf(src[x + j]!) : src[x + j]!;
        B[out + j] = nbitsLevel(value, reciprocal, zeroPoint, maxLevel);
      }
      B.fill(0, out + count, out + blobBytes);
      continue;
    }
    for (let j = 0; j < blockSize; j += 2) {
      let low = 0;
      let high = 0;
      if (j < count) {
        low = nbitsLevel(halfInputs ? roundToHalf(src[x + j]!) : src[x + j]!, reciprocal, zeroPoint, maxLevel);
        if (j + 1 < count) {
          high = nbitsLevel(halfInputs ? roundToHalf(src[x + j + 1]!) : src[x + j + 1]!, reciprocal, zeroPoint, maxLevel);
          previousLevel = high;
        } else {
          // Odd K: MLAS packs vi[1] left over from the previous pair of this thread block (see above).
          high = (start + j) % threadBlockRows === 0 ? 0 : previousLevel;
        }
      }
      B[out + (j >> 1)] = low | (high << 4);
    }
  }
  if (zeroPoints !== null && bits === 4 && (kBlocks & 1) === 1) {
    zeroPoints[zeroPointRowOffset + (kBlocks >> 1)] = pendingZeroPoint | (defaultZeroPoint << 4);
  }
}

/**
 * The WebAssembly kernel (assembly/onnx.ts: the same bytes as quantizeMatMulNBitsRow) on `rowCount` rows
 * of `src` into rows `firstRow…` of `tensor`, when the WASM backend is chosen and K is a multiple of the
 * block size (a short last block and an odd K keep their quirks on the TypeScript path). Returns whether it ran.
 */
function quantizeMatMulNBitsRowsWasm(tensor: MatMulNBitsTensor, src: Float32Array, rowCount: number, firstRow: number): boolean {
  const { layout, K } = tensor;
  if (K % layout.blockSize !== 0) return false;
  const kernel = wasmMatMulNBitsQuantizer();
  if (kernel === undefined) return false;
  const rowBytes = matMulNBitsBytes(layout, 1, K);
  const part = (array: ArrayBufferView, perRow: number): Uint8Array =>
    new Uint8Array(array.buffer, array.byteOffset + firstRow * perRow, rowCount * perRow);
  const zeroPoints = tensor.zeroPoints === undefined ? new Uint8Array(0) : part(tensor.zeroPoints, rowBytes.zeroPoints);
  kernel(layout, rowBytes, src, 0, rowCount, K, part(tensor.B, rowBytes.B), part(tensor.scales, rowBytes.scales), zeroPoints);
  return true;
}

/**
 * Quantizes whole rows into an existing tensor (from createMatMulNBitsTensor): `rows` holds a multiple of
 * K floats, which become rows `firstRow…` of the tensor. For streaming a weight in row chunks.
 */
export function quantizeMatMulNBitsRowsInto(tensor: MatMulNBitsTensor, rows: Float32Array, firstRow: number): void {
  const { layout, K, N } = tensor;
  checkWholeRows(layout.id, layout.blockSize, rows.length, K);
  const rowCount = rows.length / K;
  checkRowRange(layout.id, firstRow, rowCount, N);
  checkOutputLength(layout.id, 'B', tensor.B.length, N * tensor.kBlocks * layout.blobBytes);
  if (quantizeMatMulNBitsRowsWasm(tensor, rows, rowCount, firstRow)) return;
  for (let row = 0; row < rowCount; row++) quantizeMatMulNBitsRow(tensor, rows, row * K, firstRow + row);
}

/** Quantizes a whole torch Linear weight `[N, K]` (row-major float32) to MatMulNBits initializers. */
export function quantizeMatMulNBits(
  weight: Float32Array,
  N: number,
  K: number,
  selector: string | MatMulNBitsParams,
): MatMulNBitsTensor {
  const layout = matMulNBitsLayout(selector, K);
  checkWeightMatrix(layout.id, layout.blockSize, weight, N, K);
  const tensor = createMatMulNBitsTensor(layout.id, N, K);
  if (quantizeMatMulNBitsRowsWasm(tensor, weight, N, 0)) return tensor;
  for (let row = 0; row < N; row++) quantizeMatMulNBitsRow(tensor, weight, row * K, row);
  return tensor;
}

/** The zero point of block `block` of row `row`: packed nibble/byte, or 2^(bits−1) when absent. */
export function matMulNBitsZeroPoint(tensor: MatMulNBitsTensor, row: number, block: number): number {
  const { zeroPoints, kBlocks, bits } = tensor;
  if (zeroPoints === undefined) return MATMULNBITS_BIT_WIDTHS[bits].defaultZeroPoint;
  if (bits === 8) return zeroPoints[row * kBlocks + block]!;
  const byte = zeroPoints[row * ceilDivide(kBlocks, 2) + (block >> 1)]!;
  return (block & 1) === 0 ? byte & 0x0f : byte >> 4;
}

/** The stored scale of a block as a float (fp16 bits widened exactly). */
export function matMulNBitsScale(tensor: MatMulNBitsTensor, row: number, block: number): number {
  const index = row * tensor.kBlocks + block;
  return tensor.scales instanceof Uint16Array ? F16_TO_F32_VALUES[tensor.scales[index]!]! : tensor.scales[index]!;
}

/**
 * What MatMulNBits multiplies by: `(level − zero_point) · scale` in float (MLAS `dequantize`), as the
 * `[N, K]` torch layout; padding past K is dropped.
 */
export function dequantizeMatMulNBits(tensor: MatMulNBitsTensor): Float32Array {
  const { N, K, kBlocks, B, layout } = tensor;
  const { blockSize, blobBytes, bits } = layout;
  const out = new Float32Array(N * K);
  for (let row = 0; row < N; row++) {
    for (let block = 0; block < kBlocks; block++) {
      const scale = matMulNBitsScale(tensor, row, block);
      const zeroPoint = matMulNBitsZeroPoint(tensor, row, block);
      const start = block * blockSize;
      const count = Math.min(blockSize, K - start);
      const base = (row * kBlocks + block) * blobBytes;
      for (let j = 0; j < count; j++) {
        const level = bits === 8 ? B[base + j]! : (B[base + (j >> 1)]! >> ((j & 1) << 2)) & 0x0f;
        out[row * K + start + j] = fround((level - zeroPoint) * scale);
      }
    }
  }
  return out;
}

// ================================================================================== MatMulInteger table

export type MatMulIntegerWeightType = 'int8' | 'uint8';
export type MatMulIntegerGranularity = 'per-channel' | 'per-tensor';

/**
 * The int8 weights of the dynamic-quantization export (specs/onnx.md §2.6, §3.4). One row per weight
 * type × granularity. The ranges are quant_utils' tables: `ONNX_INT_TYPE_SYMMETRIC_RANGE` /
 * `ONNX_INT_TYPE_RANGE` for the scale (get_qmin_qmax_for_qType) and the full type range for the clip
 * (quantize_nparray asks for symmetric=False). int8 weights are symmetric and uint8 ones asymmetric
 * (`is_weight_symmetric`'s default: symmetric for INT8/INT16/INT4/FLOAT8 weights).
 */
export interface MatMulIntegerLayout {
  readonly id: string;
  readonly weightType: MatMulIntegerWeightType;
  readonly granularity: MatMulIntegerGranularity;
  readonly symmetric: boolean;
  /** [qmin, qmax] the scale is computed for. */
  readonly rangeMin: number;
  readonly rangeMax: number;
  /** [low, high] the levels are clipped to. */
  readonly clipMin: number;
  readonly clipMax: number;
  /** ONNX TensorProto.DataType of B and of the zero point: INT8 = 3, UINT8 = 2. */
  readonly onnxDataType: number;
}

const MATMULINTEGER_TYPES: Readonly<
  Record<MatMulIntegerWeightType, Pick<MatMulIntegerLayout, 'symmetric' | 'rangeMin' | 'rangeMax' | 'clipMin' | 'clipMax' | 'onnxDataType'>>
> = {
  int8: { symmetric: true, rangeMin: -127, rangeMax: 127, clipMin: -128, clipMax: 127, onnxDataType: 3 },
  uint8: { symmetric: false, rangeMin: 0, rangeMax: 255, clipMin: 0, clipMax: 255, onnxDataType: 2 },
};

export const MATMULINTEGER_LAYOUTS: readonly MatMulIntegerLayout[] = Object.freeze(
  (['int8', 'uint8'] as const).flatMap((weightType) =>
    (['per-channel', 'per-tensor'] as const).map((granularity) =>
      Object.freeze({ id: `onnx-matmulinteger-${weightType}-${granularity}`, weightType, granularity, ...MATMULINTEGER_TYPES[weightType] }),
    ),
  ),
);

export const MATMULINTEGER_LAYOUT_BY_ID: ReadonlyMap<string, MatMulIntegerLayout> = new Map(
  MATMULINTEGER_LAYOUTS.map((layout) => [layout.id, layout]),
);

export function matMulIntegerLayout(
  selector: string | { readonly weightType: MatMulIntegerWeightType; readonly granularity: MatMulIntegerGranularity },
): MatMulIntegerLayout {
  const id = typeof selector === 'string' ? selector : `onnx-matmulinteger-${selector.weightType}-${selector.granularity}`;
  const layout = MATMULINTEGER_LAYOUT_BY_ID.get(id);
  if (layout === undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, `unknown MatMulInteger layout ${JSON.stringify(id)}`, {
      hint: `one of ${MATMULINTEGER_LAYOUTS.map((row) => row.id).join(', ')}`,
    });
  }
  return layout;
}

/** Initializer shapes: B `[K, N]` (W^T), scale and zero point `[N]` per channel or scalars `[]` per tensor. */
export function matMulIntegerShapes(
  layout: MatMulIntegerLayout,
  N: number,
  K: number,
): { B: readonly [number, number]; scale: readonly number[]; zeroPoint: readonly number[] } {
  const perChannel = layout.granularity === 'per-channel' ? [N] : [];
  return { B: [K, N], scale: perChannel, zeroPoint: perChannel };
}

export function matMulIntegerBytes(
  layout: MatMulIntegerLayout,
  N: number,
  K: number,
): { B: number; scales: number; zeroPoints: number; total: number } {
  const channels = layout.granularity === 'per-channel' ? N : 1;
  const B = N * K;
  const scales = channels * 4;
  return { B, scales, zeroPoints: channels, total: B + scales + channels };
}

// ================================================================================= MatMulInteger kernel

export interface MatMulIntegerTensor {
  readonly layout: MatMulIntegerLayout;
  readonly N: number;
  readonly K: number;
  /** `[K, N]` row-major: element (k, n) is weight[n][k]. */
  readonly B: Int8Array | Uint8Array;
  /** float32 `[N]` per channel, `[1]` (a scalar initializer) per tensor. */
  readonly scales: Float32Array;
  /** `[N]` or `[1]`, same type as B. */
  readonly zeroPoints: Int8Array | Uint8Array;
}

/** Scratch for one channel's parameters (no allocation per channel). */
const integerParameters = { scale: 1, zeroPoint: 0 };

/**
 * `compute_scale_zp(rmin, rmax, qmin, qmax, symmetric)` of quant_utils.py with float32 data:
 * rmin = min(rmin, 0) and rmax = max(rmax, 0) in float32; symmetric widens both to ±max(|rmin|, |rmax|);
 * `dr = float64(rmax − rmin)` (the subtraction is float32); `scale = dr / (qmax − qmin)` in float64; a scale
 * below float32's smallest normal gives scale 1 and zero point 0; otherwise the zero point is
 * round((qmin + qmax)/2) when symmetric (0 for int8) or round(qmin − rmin/scale) in float64 (numpy rounds
 * ties to even), and the scale is then cast to float32.
 */
function computeIntegerParameters(layout: MatMulIntegerLayout, min: number, max: number): void {
  let low = Math.min(min, 0);
  let high = Math.max(max, 0);
  if (layout.symmetric) {
    const absoluteMax = Math.max(Math.abs(low), Math.abs(high));
    low = -absoluteMax;
    high = absoluteMax;
  }
  const scale64 = fround(high - low) / (layout.rangeMax - layout.rangeMin);
  if (scale64 < FLT_MIN_NORMAL) {
    integerParameters.scale = 1;
    integerParameters.zeroPoint = 0;
    return;
  }
  integerParameters.zeroPoint = layout.symmetric
    ? roundHalfToEven((layout.rangeMin + layout.rangeMax) / 2)
    : roundHalfToEven(layout.rangeMin - low / scale64);
  integerParameters.scale = fround(scale64);
}

/**
 * `quantize_nparray`: `(arr.astype(float32) / scale).round() + zero_point`, clipped to the type's range.
 * The division is float32 and numpy rounds ties to even. A NaN weight gets the zero point.
 */
function integerLevel(layout: MatMulIntegerLayout, value: number, scale: number, zeroPoint: number): number {
  const level = roundHalfToEven(fround(value / scale)) + zeroPoint;
  return clampLevel(level, layout.clipMin, layout.clipMax, zeroPoint);
}

/** min/max of `count` floats with NaN skipped (numpy would propagate NaN into a NaN scale). */
function scanRange(values: Float32Array, offset: number, count: number, range: { min: number; max: number }): void {
  for (let i = 0; i < count; i++) {
    const value = values[offset + i]!;
    if (value < range.min) range.min = value;
    if (value > range.max) range.max = value;
  }
}

/**
 * Quantizes a torch Linear weight `[N, K]` to MatMulInteger's B `[K, N]` with per-output-channel
 * (`quantize_weight_per_channel_impl` along B's last axis, N) or per-tensor (`quantize_initializer_impl`)
 * scale and zero point.
 */
export function quantizeMatMulInteger(
  weight: Float32Array,
  N: number,
  K: number,
  selector: string | { readonly weightType: MatMulIntegerWeightType; readonly granularity: MatMulIntegerGranularity },
): MatMulIntegerTensor {
  const layout = matMulIntegerLayout(selector);
  const perChannel = layout.granularity === 'per-channel';
  // The "block" of a MatMulInteger weight is a whole row (per channel) or the whole tensor.
  checkWeightMatrix(layout.id, perChannel ? K : N * K, weight, N, K);
  const channels = perChannel ? N : 1;
  const B = layout.weightType === 'int8' ? new Int8Array(N * K) : new Uint8Array(N * K);
  const scales = new Float32Array(channels);
  const zeroPoints = layout.weightType === 'int8' ? new Int8Array(channels) : new Uint8Array(channels);
  const range = { min: Number.POSITIVE_INFINITY, max: Number.NEGATIVE_INFINITY };

  if (!perChannel) {
    scanRange(weight, 0, N * K, range);
    computeIntegerParameters(layout, range.min, range.max);
    scales[0] = integerParameters.scale;
    zeroPoints[0] = integerParameters.zeroPoint;
  }
  for (let row = 0; row < N; row++) {
    if (perChannel) {
      range.min = Number.POSITIVE_INFINITY;
      range.max = Number.NEGATIVE_INFINITY;
      scanRange(weight, row * K, K, range);
      computeIntegerParameters(layout, range.min, range.max);
      scales[row] = integerParameters.scale;
      zeroPoints[row] = integerParameters.zeroPoint;
    }
    const { scale, zeroPoint } = integerParameters;
    for (let k = 0; k < K; k++) B[k * N + row] = integerLevel(layout, weight[row * K + k]!, scale, zeroPoint);
  }
  return { layout, N, K, B, scales, zeroPoints };
}

/** `(level − zero_point) · scale` back in the torch `[N, K]` layout. */
export function dequantizeMatMulInteger(tensor: MatMulIntegerTensor): Float32Array {
  const { N, K, B, scales, zeroPoints } = tensor;
  const perChannel = tensor.layout.granularity === 'per-channel';
  const out = new Float32Array(N * K);
  for (let row = 0; row < N; row++) {
    const scale = scales[perChannel ? row : 0]!;
    const zeroPoint = zeroPoints[perChannel ? row : 0]!;
    for (let k = 0; k < K; k++) out[row * K + k] = fround((B[k * N + row]! - zeroPoint) * scale);
  }
  return out;
}

// ============================================================================ row chunks for the pool

/** Whether `id` names an ONNX weight layout the quantizer pool can produce in row chunks. */
export function isOnnxChunkLayout(id: string): boolean {
  return MATMULNBITS_LAYOUT_BY_ID.has(id) || (MATMULINTEGER_LAYOUT_BY_ID.get(id)?.granularity === 'per-channel');
}

/** Bytes of each part of a chunk of `rows` whole rows of length K in `id`, in the order they are packed. */
export function onnxChunkParts(id: string, rows: number, K: number): { B: number; scales: number; zeroPoints: number } {
  const nbits = MATMULNBITS_LAYOUT_BY_ID.get(id);
  if (nbits !== undefined) {
    const { B, scales, zeroPoints } = matMulNBitsBytes(nbits, rows, K);
    return { B, scales, zeroPoints };
  }
  const { B, scales, zeroPoints } = matMulIntegerBytes(matMulIntegerLayout(id), rows, K);
  return { B, scales, zeroPoints };
}

/**
 * Quantizes a chunk of whole rows (output channels) of a torch `[N, K]` weight in an ONNX layout and packs
 * the chunk's initializer parts back to back — B, scales, zero points — for the writer to place: a
 * MatMulNBits chunk's parts are contiguous runs of the whole tensor's initializers; a per-channel
 * MatMulInteger chunk's B is `[K, rows]`, columns of the whole `[K, N]` B (per-tensor scales cannot be
 * computed a chunk at a time and are refused).
 */
export function quantizeOnnxRows(id: string, rows: Float32Array, K: number): Uint8Array {
  const bytesOf = (array: ArrayBufferView): Uint8Array => new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  const count = rows.length / K;
  const nbits = MATMULNBITS_LAYOUT_BY_ID.get(id);
  let parts: Uint8Array[];
  if (nbits !== undefined) {
    checkWholeRows(nbits.id, nbits.blockSize, rows.length, K);
    const kernel = K % nbits.blockSize === 0 ? wasmMatMulNBitsQuantizer() : undefined;
    if (kernel !== undefined) {
      // The WebAssembly kernel writes each part straight into its place in the chunk's output.
      checkShape(nbits.id, nbits.blockSize, count, K);
      const rowBytes = matMulNBitsBytes(nbits, 1, K);
      const out = new Uint8Array(count * rowBytes.total);
      const scalesStart = count * rowBytes.B;
      const zeroPointsStart = scalesStart + count * rowBytes.scales;
      kernel(nbits, rowBytes, rows, 0, count, K, out.subarray(0, scalesStart), out.subarray(scalesStart, zeroPointsStart), out.subarray(zeroPointsStart));
      return out;
    }
    const tensor = createMatMulNBitsTensor(nbits.id, count, K);
    for (let row = 0; row < count; row++) quantizeMatMulNBitsRow(tensor, rows, row * K, row);
    parts = [tensor.B, bytesOf(tensor.scales), ...(tensor.zeroPoints === undefined ? [] : [tensor.zeroPoints])];
  } else {
    const layout = matMulIntegerLayout(id);
    if (layout.granularity !== 'per-channel') {
      throw new PolyquantError(ERROR_CODES.USAGE, `${id} has one scale for the whole tensor; it cannot be quantized a chunk of rows at a time`);
    }
    const tensor = quantizeMatMulInteger(rows, count, K, id);
    parts = [bytesOf(tensor.B), bytesOf(tensor.scales), bytesOf(tensor.zeroPoints)];
  }
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
