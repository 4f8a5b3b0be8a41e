/**
 * GPTQ (gptq.ts) for the ONNX and WebGPU int4/int8 layouts: `GptqGroupQuantizer`s that fill a
 * MatMulNBitsTensor (onnx-layouts.ts) or a WebGpuGroupTensor (webgpu-layouts.ts) with exactly the layout's
 * own rules, so a calibrated file is an ordinary file of the format, loadable unchanged everywhere.
 *
 * What GPTQ changes is only *which values* the layout's rules see: each block's scale (and zero point) is
 * fitted when GPTQ reaches the block, from the block's values as they stand then (the original weights
 * plus the error feedback of the columns already quantized), and each value is then rounded with the
 * layout's own rounding rule against the block's stored scale. So:
 * - the scale rule is the layout's (MLAS `range2scale` / `range2scalezp`; MLC `max_abs / 7`; polyquant int8
 *   `max_abs / 127`), the stored scale is rounded to the layout's scale dtype (fp16 rounds to nearest
 *   even), and the levels are computed against the stored scale, as the RTN kernels do;
 * - with a diagonal Hessian and no dampening nothing propagates, the values are the original weights and
 *   the bytes equal the layout's RTN kernel's byte for byte (test/gptq-layouts.test.ts holds every variant
 *   to that, the MLAS odd-K pair-byte quirk and the padding included);
 * - the value GPTQ's error feedback sees is what the runtime multiplies by: `(level − zp) · scale` in float
 *   (MatMulNBits), in the model dtype (MLC int4: fp16 products for q4f16_1), `level · scale` (int8), with
 *   the scale as stored on disk (q4f32_1's scales under bf16 storage are bf16).
 *
 * Not kept: a refined scale per block (a search over clipping ratios 0.80…1.00 of the block's range, and
 * for symmetric MatMulNBits the scale's sign, for the least Σ H_jj (w_j − ŵ_j)², as AWQ's clip search and
 * llama.cpp's make_qx_quants do). On polyglot-ko-tiny it lowered round-to-nearest's KLD by 12 % (symmetric
 * q4) but did nothing on top of GPTQ (−2 % to +3 %, measured while this was built; DESIGN-NOTES), whose
 * error feedback already absorbs what a better scale would save; it cost 3–4× the conversion time.
 *
 * quant/ knows no file format (DESIGN.md): the chunk functions at the end return the same packed bytes as
 * `quantizeOnnxRows` / `quantizeWebGpuChunk`, for the converters to place.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import * as float from '../tensor/float.js';
import { type GptqFactor, type GptqGroupQuantizer, gptqFactor, gptqQuantizeRows } from './gptq.js';
import * as common from './layout-common.js';
import {
  createMatMulNBitsTensor,
  MATMULNBITS_BIT_WIDTHS,
  MATMULNBITS_LAYOUT_BY_ID,
  type MatMulNBitsParams,
  type MatMulNBitsTensor,
  matMulNBitsBytes,
  nbitsBlockScale,
  nbitsBlockZeroPoint,
  nbitsLevel,
} from './onnx-layouts.js';
import {
  createWebGpuTensor,
  f32ToTensorCacheBf16,
  f32ToTensorCacheBf16Array,
  isWebGpuChunkLayout,
  type WebGpuGroupTensor,
  webGpuLayout,
  webGpuStoresBf16,
  type TensorCacheStorage,
} from './webgpu-layouts.js';

// Module-local aliases of the hot helpers (as the layout kernels do).
const { bf16ToF32, F16_TO_F32_VALUES, f32ToF16 } = float;
const { ceilDivide, checkShape, checkWeightMatrix, checkWholeRows, clampLevel, FLT_MAX, roundHalfToEven } = common;
const fround = Math.fround;

function roundToHalf(value: number): number {
  return F16_TO_F32_VALUES[f32ToF16(value)]!;
}

/** A calibration Hessian as the converters take it: Σ x xᵀ / count over a matrix's inputs, K × K row-major. */
export interface CalibrationHessian {
  readonly columns: number;
  readonly matrix: Float64Array;
}

/** How the converters run GPTQ on the weights that have a Hessian. */
export interface GptqConvertOptions {
  /** GPTQ's percdamp (gptq.ts; default 0.01 of diag(H)'s mean). */
  readonly dampening?: number | undefined;
}

// ======================================================================================= MatMulNBits

/**
 * Fills a MatMulNBitsTensor (createMatMulNBitsTensor) row by row under GPTQ: rows `0 … N−1` of the tensor are
 * GPTQ's rows `rowOffset …`. The tensor's bytes come out as `quantizeMatMulNBitsRowsInto` would write them
 * for the values GPTQ hands over (quantizeMatMulNBitsRow's rules, point by point).
 */
export class MatMulNBitsGptqQuantizer implements GptqGroupQuantizer {
  readonly groupSize: number;
  private readonly maxLevel: number;
  private readonly defaultZeroPoint: number;
  private readonly halfInputs: boolean;
  /** Per tensor row: the current block's stored scale, its float reciprocal and zero point. */
  private readonly stored: Float64Array;
  private readonly reciprocal: Float64Array;
  private readonly zeroPoint: Int32Array;

  constructor(
    readonly tensor: MatMulNBitsTensor,
    private readonly rowOffset = 0,
  ) {
    const { layout, N } = tensor;
    this.groupSize = layout.blockSize;
    this.maxLevel = MATMULNBITS_BIT_WIDTHS[layout.bits].maxLevel;
    this.defaultZeroPoint = MATMULNBITS_BIT_WIDTHS[layout.bits].defaultZeroPoint;
    this.halfInputs = layout.scaleType === 'f16';
    this.stored = new Float64Array(N);
    this.reciprocal = new Float64Array(N);
    this.zeroPoint = new Int32Array(N);
  }

  /** A value as the kernel reads it: the weight in the scale's dtype (fp16 scales mean an fp16 weight). */
  private input(value: number): number {
    return this.halfInputs ? roundToHalf(value) : fround(value);
  }

  fitGroup(row: number, column: number, values: Float64Array): void {
    const { tensor, defaultZeroPoint } = this;
    const { layout, kBlocks } = tensor;
    const local = row - this.rowOffset;
    const block = Math.floor(column / layout.blockSize);
    const count = values.length;
    let min = FLT_MAX;
    let max = -FLT_MAX;
    for (let j = 0; j < count; j++) {
      const value = this.input(values[j] as number);
      if (value < min) min = value;
      if (value > max) max = value;
    }
    // MLAS's range2scale / range2scalezp, as the RTN kernel fits them (onnx-layouts.ts).
    const scale = nbitsBlockScale(min, max, layout.symmetric, layout.bits);
    const zeroPoint = nbitsBlockZeroPoint(min, scale, layout.symmetric, layout.bits);

    const scaleIndex = local * kBlocks + block;
    let stored = scale;
    if (tensor.scales instanceof Uint16Array) {
      const half = f32ToF16(scale);
      tensor.scales[scaleIndex] = half;
      stored = F16_TO_F32_VALUES[half]!;
    } else {
      tensor.scales[scaleIndex] = scale;
    }
    this.stored[local] = stored;
    this.reciprocal[local] = stored !== 0 ? fround(1 / stored) : 0;
    this.zeroPoint[local] = zeroPoint;

    const zeroPoints = tensor.zeroPoints;
    if (zeroPoints !== undefined) {
      if (layout.bits === 8) {
        zeroPoints[local * kBlocks + block] = zeroPoint;
      } else {
        // Two per byte, low nibble first; an odd kBlocks leaves the last byte's high nibble at kMid (8).
        const index = local * ceilDivide(kBlocks, 2) + (block >> 1);
        if ((block & 1) === 1) zeroPoints[index] = ((zeroPoints[index] as number) & 0x0f) | (zeroPoint << 4);
        else zeroPoints[index] = zeroPoint | ((block === kBlocks - 1 ? defaultZeroPoint : (zeroPoints[index] as number) >> 4) << 4);
      }
    }
  }

  quantize(row: number, column: number, value: number): number {
    const { tensor, maxLevel } = this;
    const { layout, kBlocks, K, B } = tensor;
    const local = row - this.rowOffset;
    const blockSize = layout.blockSize;
    const block = Math.floor(column / blockSize);
    const j = column - block * blockSize;
    const zeroPoint = this.zeroPoint[local] as number;
    const level = nbitsLevel(this.input(value), this.reciprocal[local] as number, zeroPoint, maxLevel);
    const base = (local * kBlocks + block) * layout.blobBytes;
    if (layout.bits === 8) {
      B[base + j] = level;
    } else {
      const index = base + (j >> 1);
      if ((j & 1) === 1) {
        B[index] = ((B[index] as number) & 0x0f) | (level << 4);
      } else {
        let high = ((B[index] as number) >> 4) & 0x0f;
        if (column === K - 1) {
          // Odd K: MLAS packs the vi[1] left over from the previous pair of its thread block (2·blockSize
          // columns): element K−2's level, or 0 when K−1 starts a thread block (quantizeMatMulNBitsRow).
          high = column % (2 * blockSize) === 0 ? 0 : this.levelAt(local, column - 1);
        }
        B[index] = level | (high << 4);
      }
    }
    return fround((level - zeroPoint) * (this.stored[local] as number));
  }

  /** The 4-bit level already written at (tensor row, column). */
  private levelAt(local: number, column: number): number {
    const { layout, kBlocks, B } = this.tensor;
    const block = Math.floor(column / layout.blockSize);
    const j = column - block * layout.blockSize;
    const byte = B[(local * kBlocks + block) * layout.blobBytes + (j >> 1)] as number;
    return (j & 1) === 1 ? byte >> 4 : byte & 0x0f;
  }
}

/** GPTQ-quantizes a whole `[N, K]` weight into MatMulNBits initializers (createMatMulNBitsTensor's layout). */
export function gptqQuantizeMatMulNBits(
  weight: Float32Array,
  N: number,
  K: number,
  selector: string | MatMulNBitsParams,
  factor: GptqFactor,
): MatMulNBitsTensor {
  const tensor = createMatMulNBitsTensor(selector, N, K);
  checkWeightMatrix(tensor.layout.id, tensor.layout.blockSize, weight, N, K);
  checkFactor(tensor.layout.id, factor, K);
  gptqQuantizeRows(weight, N, 0, factor, new MatMulNBitsGptqQuantizer(tensor));
  return tensor;
}

// ============================================================================================ WebGPU

export interface WebGpuGptqOptions {
  /**
   * How the tensor cache stores float32 scales (q4f32_1 under `bf16` keeps its levels, computed against
   * the float32 scale, but the runtime multiplies by the bf16 scale, which GPTQ's feedback then uses).
   */
  readonly storage?: TensorCacheStorage | undefined;
}

/**
 * Fills a WebGpuGroupTensor (createWebGpuTensor of q4f16_1, q4f32_1, q8f16_pq or q8f32_pq) under GPTQ; rows
 * `0 … N−1` of the tensor are GPTQ's rows `rowOffset …`. The rules are webgpu-layouts.ts'
 * quantizeRowMlcInt4 / quantizeRowPolyquantInt8, point by point.
 */
export class WebGpuGptqQuantizer implements GptqGroupQuantizer {
  readonly groupSize: number;
  private readonly mlc: boolean;
  private readonly halfModel: boolean;
  private readonly halfScales: boolean;
  private readonly bf16Scales: boolean;
  /** MLC int4: 7 (levels 0..14 around it); polyquant int8: 127 (levels −127..127). */
  private readonly maxInt: number;
  /** Per tensor row: the current group's scale the levels are computed against, and the one the runtime multiplies by. */
  private readonly levelScale: Float64Array;
  private readonly runtimeScale: Float64Array;

  constructor(
    readonly tensor: WebGpuGroupTensor,
    private readonly rowOffset = 0,
    options: WebGpuGptqOptions = {},
  ) {
    const { layout, N } = tensor;
    this.groupSize = layout.groupSize;
    this.mlc = layout.source === 'mlc';
    this.halfModel = this.mlc && layout.modelDType === 'float16';
    this.halfScales = tensor.qScale instanceof Uint16Array;
    this.bf16Scales = webGpuStoresBf16(layout, 'scale', options.storage ?? 'raw');
    this.maxInt = this.mlc ? 7 : 127;
    this.levelScale = new Float64Array(N);
    this.runtimeScale = new Float64Array(N);
  }

  /** MLC casts the weight to the model dtype first; int8 reads float32. */
  private input(value: number): number {
    return this.halfModel ? roundToHalf(value) : fround(value);
  }

  /** The scale as the layout stores it (fp16, or float32) — what the levels are computed against. */
  private storedScale(scale: number): number {
    return this.halfScales ? roundToHalf(scale) : fround(scale);
  }

  /** What the runtime multiplies by: the stored scale, or its bf16 encoding on disk. */
  private runtimeOf(stored: number): number {
    return this.bf16Scales ? bf16ToF32(f32ToTensorCacheBf16(stored)) : stored;
  }

  private level(input: number, scale: number): number {
    if (this.mlc) {
      if (scale === 0) return 7;
      const shifted = this.halfModel ? roundToHalf(roundToHalf(input / scale) + 7) : fround(fround(input / scale) + 7);
      return clampLevel(roundHalfToEven(shifted), 0, 14, 7);
    }
    return scale !== 0 ? clampLevel(roundHalfToEven(fround(input / scale)), -127, 127, 0) : 0;
  }

  private dequantized(level: number, scale: number): number {
    if (this.mlc) {
      const product = (level - 7) * scale;
      return this.halfModel ? roundToHalf(product) : fround(product);
    }
    return fround(level * scale);
  }

  fitGroup(row: number, column: number, values: Float64Array): void {
    const { tensor, maxInt } = this;
    const local = row - this.rowOffset;
    const groups = ceilDivide(tensor.K, this.groupSize);
    const group = Math.floor(column / this.groupSize);
    const count = values.length;
    let maxAbs = 0;
    for (let j = 0; j < count; j++) {
      const magnitude = Math.abs(this.input(values[j] as number));
      if (magnitude > maxAbs) maxAbs = magnitude;
    }
    // max_abs / max_int in the model dtype (MLC) or float32 (int8), then stored.
    const stored = this.storedScale(this.halfModel ? maxAbs / maxInt : fround(maxAbs / maxInt));
    const index = local * groups + group;
    if (tensor.qScale instanceof Uint16Array) tensor.qScale[index] = f32ToF16(stored);
    else tensor.qScale[index] = stored;
    this.levelScale[local] = stored;
    this.runtimeScale[local] = this.runtimeOf(stored);
  }

  quantize(row: number, column: number, value: number): number {
    const { tensor } = this;
    const local = row - this.rowOffset;
    const { layout } = tensor;
    const groups = ceilDivide(tensor.K, this.groupSize);
    const group = Math.floor(column / this.groupSize);
    const j = column - group * this.groupSize;
    const level = this.level(this.input(value), this.levelScale[local] as number);
    const perWord = layout.elementsPerWord;
    const bits = layout.bits;
    const word = (local * groups + group) * (this.groupSize / perWord) + Math.floor(j / perWord);
    const shift = bits * (j % perWord);
    const mask = ((1 << bits) - 1) << shift;
    tensor.qWeight[word] = (((tensor.qWeight[word] as number) & ~mask) | ((level << shift) & mask)) >>> 0;
    return this.dequantized(level, this.runtimeScale[local] as number);
  }
}

/** GPTQ-quantizes a whole `[N, K]` weight to a WebGPU group layout (q4f16_1, q4f32_1, q8f16_pq, q8f32_pq). */
export function gptqQuantizeWebGpu(
  name: string,
  weight: Float32Array,
  N: number,
  K: number,
  factor: GptqFactor,
  options: WebGpuGptqOptions = {},
): WebGpuGroupTensor {
  const layout = webGpuLayout(name);
  if (layout.kind !== 'group-quant') {
    throw new PolyquantError(ERROR_CODES.USAGE, `${layout.name} stores the weight unquantized; GPTQ has nothing to round`, {
      hint: 'GPTQ applies to q4f16_1, q4f32_1, q8f16_pq and q8f32_pq',
    });
  }
  checkWeightMatrix(layout.name, layout.groupSize, weight, N, K);
  checkFactor(layout.name, factor, K);
  const tensor = createWebGpuTensor(layout.name, N, K) as WebGpuGroupTensor;
  gptqQuantizeRows(weight, N, 0, factor, new WebGpuGptqQuantizer(tensor, 0, options));
  return tensor;
}

// ============================================================================ row chunks for the converters

/**
 * The factor of one weight's Hessian for GPTQ (gptqFactor), after checking that it belongs to rows of
 * length K. Computed once per source tensor and shared by every layout written from it.
 */
export function calibrationFactor(tensor: string, hessian: CalibrationHessian, K: number, options: GptqConvertOptions = {}): GptqFactor {
  if (hessian.columns !== K || hessian.matrix.length !== K * K) {
    throw new PolyquantError(
      ERROR_CODES.CONFIG,
      `the calibration Hessian has ${hessian.columns} columns (${hessian.matrix.length} values) but the weight's rows have K = ${K}`,
      { tensor, hint: 'the Hessian must come from the same model as the weights' },
    );
  }
  return gptqFactor(hessian.matrix, K, { tensor, ...(options.dampening !== undefined && { dampening: options.dampening }) });
}

function checkFactor(layout: string, factor: GptqFactor, K: number): void {
  if (factor.columns !== K) {
    throw new PolyquantError(ERROR_CODES.CONFIG, `${layout}: the calibration Hessian has ${factor.columns} columns but the weight's rows have K = ${K}`, {
      hint: 'the Hessian must come from the same model as the weights',
    });
  }
}

function bytesOf(array: ArrayBufferView): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

/** Whether `id` (a pool chunk layout) can be GPTQ-quantized: MatMulNBits, or a WebGPU group layout. */
export function isGptqChunkLayout(id: string): boolean {
  if (MATMULNBITS_LAYOUT_BY_ID.has(id)) return true;
  if (!isWebGpuChunkLayout(id)) return false;
  return webGpuLayout(id.split(':')[1] as string).kind === 'group-quant';
}

/**
 * GPTQ on a chunk of whole rows (rows are independent given the Hessian), packed as the pool packs the
 * layout's RTN chunk: MatMulNBits `[B, scales, zero points]` (quantizeOnnxRows), WebGPU `[q_weight,
 * q_scale]` in the chunk's storage (quantizeWebGpuChunk). `rows` is not modified.
 */
export function gptqQuantizeChunk(id: string, rows: Float32Array, K: number, factor: GptqFactor): Uint8Array {
  const nbits = MATMULNBITS_LAYOUT_BY_ID.get(id);
  if (nbits !== undefined) {
    checkWholeRows(nbits.id, nbits.blockSize, rows.length, K);
    const count = rows.length / K;
    checkShape(nbits.id, nbits.blockSize, count, K);
    checkFactor(nbits.id, factor, K);
    const tensor = createMatMulNBitsTensor(nbits.id, count, K);
    gptqQuantizeRows(rows, count, 0, factor, new MatMulNBitsGptqQuantizer(tensor));
    const sizes = matMulNBitsBytes(nbits, count, K);
    const out = new Uint8Array(sizes.total);
    out.set(tensor.B, 0);
    out.set(bytesOf(tensor.scales), sizes.B);
    if (tensor.zeroPoints !== undefined) out.set(tensor.zeroPoints, sizes.B + sizes.scales);
    return out;
  }
  if (!isGptqChunkLayout(id)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${JSON.stringify(id)} is not a layout GPTQ can fill`, {
      hint: 'GPTQ fills MatMulNBits (onnx-q4-…, onnx-q8-…) and the WebGPU group layouts (webgpu:q4f16_1:raw, …)',
    });
  }
  const [, name, storage] = id.split(':') as [string, string, TensorCacheStorage];
  const layout = webGpuLayout(name);
  checkWholeRows(layout.name, layout.groupSize, rows.length, K);
  const count = rows.length / K;
  checkShape(layout.name, layout.groupSize, count, K);
  checkFactor(layout.name, factor, K);
  const tensor = createWebGpuTensor(layout.name, count, K) as WebGpuGroupTensor;
  gptqQuantizeRows(rows, count, 0, factor, new WebGpuGptqQuantizer(tensor, 0, { storage }));
  const weight = bytesOf(tensor.qWeight);
  const scale =
    tensor.qScale instanceof Float32Array && webGpuStoresBf16(layout, 'scale', storage) ? bytesOf(f32ToTensorCacheBf16Array(tensor.qScale)) : bytesOf(tensor.qScale);
  const out = new Uint8Array(weight.length + scale.length);
  out.set(weight, 0);
  out.set(scale, weight.length);
  return out;
}
