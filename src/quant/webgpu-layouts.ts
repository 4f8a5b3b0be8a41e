/**
 * WebGPU weight layouts: what a torch `nn.Linear.weight` `[N = out, K = in]` (or an embedding `[V, H]`)
 * becomes in the MLC tensor cache (specs/webgpu.md §2).
 *
 * - MLC's group quantization **q4f16_1** and **q4f32_1**, byte-exact: `GroupQuantize._quantize` and
 *   `utils.pack_weight` in mlc-llm `python/mlc_llm/quantization/group_quantization.py` / `utils.py`, with
 *   the "NK" linear layout (`linear_weight_layout = "NK"`: groups along K inside each row; the `_0` presets'
 *   "KN" transpose is not written). Names `{layer}.q_weight` uint32 `[N, ceil(K/32)·4]` and `{layer}.q_scale`
 *   `[N, ceil(K/32)]` in the model dtype (float16 / float32).
 * - MLC's **q0f16** / **q0f32**: the weight unquantized in the model dtype, name and shape unchanged.
 * - polyquant's own int8 group layout **q8f16_pq** / **q8f32_pq** (MLC ships no int8 preset): symmetric
 *   signed int8, group 32 along K, four per uint32, specified in docs/webgpu-int8-layout.md.
 *
 * The group-quant kernels run in WebAssembly SIMD under the wasm backend (assembly/webgpu.ts, byte-identical
 * to the TypeScript kernels below, which stay as the reference and for `POLYQUANT_KERNELS=js`;
 * test/quant-wasm-webgpu.test.ts holds it to them).
 *
 * Words are built as numbers and kept in a Uint32Array; the tensor cache stores them little-endian
 * (`numpy.tobytes()` on every supported host), which is the byte order of a Uint32Array on every platform
 * Node supports (x64, arm64), so a writer can dump `qWeight.buffer` as is.
 *
 * On disk, MLC's `convert_weight` writes every float32 tensor as bf16 (`"format": "f32-to-bf16"`,
 * specs/webgpu.md §1.2): q4f32_1's scales and q0f32's weights lose precision there, *after* the levels
 * were computed against the float32 scale. The table records each tensor's disk encoding; our own q8f32_pq
 * asks for `"raw"` scales, since bf16 scales would cost int8 most of its precision.
 */

import { ERROR_CODES, PolyquantError } from '../errors.js';
import * as float from '../tensor/float.js';
import { GGML_TYPES } from './ggml-types.js';
import * as common from './layout-common.js';
import { type WebGpuKernelLayout, wasmQuantizer, wasmWebGpuQuantizer } from './wasm/runtime.js';

// Module-local aliases of the hot helpers (as legacy.ts does): under some loaders (tsx) every use of an
// imported binding is a getter call, which keeps V8 from inlining them into the per-element loops.
const { bf16ToF32, F16_TO_F32_VALUES, f32Bits, f32ToF16, f32ToF16Array } = float;
const { ceilDivide, checkRowRange, checkShape, checkWeightMatrix, checkWholeRows, clampLevel, roundHalfToEven } = common;
const fround = Math.fround;

// =========================================================================================== the table

export type WebGpuLayoutName = 'q4f16_1' | 'q4f32_1' | 'q0f16' | 'q0f32' | 'q8f16_pq' | 'q8f32_pq';

/** TVM dtype strings as the tensor cache's `dtype` field spells them. */
export type WebGpuDType = 'uint32' | 'float16' | 'float32';

/** The tensor cache's per-record `format`: `raw` bytes, or float32 stored as its upper 16 bits. */
export type TensorCacheFormat = 'raw' | 'f32-to-bf16';

export interface WebGpuLayout {
  readonly name: WebGpuLayoutName;
  /** `group-quant`: q_weight + q_scale; `no-quant`: the weight in `modelDType`. */
  readonly kind: 'group-quant' | 'no-quant';
  /** Who defines the bytes: MLC's registry (quantization.py) or polyquant (docs/webgpu-int8-layout.md). */
  readonly source: 'mlc' | 'polyquant';
  /** MLC's `model_dtype`: the dtype of the scales (and of the arithmetic, for MLC's own presets). */
  readonly modelDType: 'float16' | 'float32';
  /** Bits per stored weight element. */
  readonly bits: 4 | 8 | 16 | 32;
  /** Elements per group along K sharing one scale (0 for no-quant). */
  readonly groupSize: number;
  /** Quantized elements per uint32 word, element 0 in the lowest bits (0 for no-quant). */
  readonly elementsPerWord: number;
  /** Dequantization is `(level − levelOffset) · scale`: MLC stores int4 with an offset of 7; ours is signed. */
  readonly levelOffset: number;
  /** The stored level range (MLC int4: 0..14, 15 never used; ours: −127..127, −128 never used). */
  readonly minLevel: number;
  readonly maxLevel: number;
  /** dtype of the weight tensor (q_weight or weight). */
  readonly weightDType: WebGpuDType;
  /** dtype of q_scale (null for no-quant). */
  readonly scaleDType: 'float16' | 'float32' | null;
  /** How each tensor is written to the tensor cache. */
  readonly weightFormat: TensorCacheFormat;
  readonly scaleFormat: TensorCacheFormat | null;
}

const DTYPE_BYTES: Readonly<Record<WebGpuDType, number>> = { uint32: 4, float16: 2, float32: 4 };

/**
 * One row per layout. MLC rows come from `QUANTIZATION` in mlc-llm python/mlc_llm/quantization/
 * quantization.py (group_size 32, quantize_dtype int4, storage_dtype uint32, linear_weight_layout NK;
 * max_int_value = 2^(4−1) − 1 = 7, levels clamped to [0, 2·7]) and specs/webgpu.md §2.1–2.2.
 */
export const WEBGPU_LAYOUTS: Readonly<Record<WebGpuLayoutName, WebGpuLayout>> = {
  q4f16_1: {
    name: 'q4f16_1', kind: 'group-quant', source: 'mlc', modelDType: 'float16', bits: 4, groupSize: 32, elementsPerWord: 8,
    levelOffset: 7, minLevel: 0, maxLevel: 14, weightDType: 'uint32', scaleDType: 'float16', weightFormat: 'raw', scaleFormat: 'raw',
  },
  q4f32_1: {
    name: 'q4f32_1', kind: 'group-quant', source: 'mlc', modelDType: 'float32', bits: 4, groupSize: 32, elementsPerWord: 8,
    levelOffset: 7, minLevel: 0, maxLevel: 14, weightDType: 'uint32', scaleDType: 'float32', weightFormat: 'raw', scaleFormat: 'f32-to-bf16',
  },
  q0f16: {
    name: 'q0f16', kind: 'no-quant', source: 'mlc', modelDType: 'float16', bits: 16, groupSize: 0, elementsPerWord: 0,
    levelOffset: 0, minLevel: 0, maxLevel: 0, weightDType: 'float16', scaleDType: null, weightFormat: 'raw', scaleFormat: null,
  },
  q0f32: {
    name: 'q0f32', kind: 'no-quant', source: 'mlc', modelDType: 'float32', bits: 32, groupSize: 0, elementsPerWord: 0,
    levelOffset: 0, minLevel: 0, maxLevel: 0, weightDType: 'float32', scaleDType: null, weightFormat: 'f32-to-bf16', scaleFormat: null,
  },
  q8f16_pq: {
    name: 'q8f16_pq', kind: 'group-quant', source: 'polyquant', modelDType: 'float16', bits: 8, groupSize: 32, elementsPerWord: 4,
    levelOffset: 0, minLevel: -127, maxLevel: 127, weightDType: 'uint32', scaleDType: 'float16', weightFormat: 'raw', scaleFormat: 'raw',
  },
  q8f32_pq: {
    name: 'q8f32_pq', kind: 'group-quant', source: 'polyquant', modelDType: 'float32', bits: 8, groupSize: 32, elementsPerWord: 4,
    levelOffset: 0, minLevel: -127, maxLevel: 127, weightDType: 'uint32', scaleDType: 'float32', weightFormat: 'raw', scaleFormat: 'raw',
  },
};

export const WEBGPU_LAYOUT_NAMES = Object.keys(WEBGPU_LAYOUTS) as WebGpuLayoutName[];

export function isWebGpuLayoutName(value: unknown): value is WebGpuLayoutName {
  return typeof value === 'string' && Object.hasOwn(WEBGPU_LAYOUTS, value);
}

/** The layout a name stands for, in any case (`Q4F16_1` is q4f16_1). */
export function webGpuLayout(name: string): WebGpuLayout {
  const canonical = typeof name === 'string' ? name.trim().toLowerCase() : name;
  if (!isWebGpuLayoutName(canonical)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `unknown WebGPU layout ${JSON.stringify(name)}`, {
      hint: `one of ${WEBGPU_LAYOUT_NAMES.join(', ')} (any case)`,
    });
  }
  return WEBGPU_LAYOUTS[canonical];
}

/** One tensor-cache record a `[N, K]` weight becomes. */
export interface WebGpuTensorSpec {
  readonly name: string;
  readonly shape: readonly [number, number];
  readonly dtype: WebGpuDType;
  /** In memory (what MLC's `ParamBytes` counts). */
  readonly bytes: number;
  /** On disk, after the record's format (f32-to-bf16 halves float32). */
  readonly diskBytes: number;
  readonly format: TensorCacheFormat;
}

function diskBytes(dtype: WebGpuDType, format: TensorCacheFormat, elements: number): number {
  return format === 'f32-to-bf16' && dtype === 'float32' ? elements * 2 : elements * DTYPE_BYTES[dtype];
}

/**
 * The records of a weight named `weightName` (an HF `….weight`): `….q_weight` and `….q_scale` for group
 * layouts (MLC's `quant_map.param_map`), the unchanged name for no-quant ones.
 */
export function webGpuTensorSpecs(layout: WebGpuLayout, weightName: string, N: number, K: number): WebGpuTensorSpec[] {
  checkShape(layout.name, layout.groupSize, N, K);
  if (layout.kind === 'no-quant') {
    const dtype = layout.weightDType;
    return [{ name: weightName, shape: [N, K], dtype, bytes: N * K * DTYPE_BYTES[dtype], diskBytes: diskBytes(dtype, layout.weightFormat, N * K), format: layout.weightFormat }];
  }
  if (!weightName.endsWith('.weight')) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${layout.name}: the weight name ${JSON.stringify(weightName)} does not end in ".weight"`, {
      hint: 'MLC names the quantized pair after the Linear: {layer}.q_weight and {layer}.q_scale',
    });
  }
  const base = weightName.slice(0, -'.weight'.length);
  const groups = ceilDivide(K, layout.groupSize);
  const words = groups * (layout.groupSize / layout.elementsPerWord);
  const scaleDType = layout.scaleDType!;
  const scaleFormat = layout.scaleFormat!;
  return [
    { name: `${base}.q_weight`, shape: [N, words], dtype: 'uint32', bytes: N * words * 4, diskBytes: N * words * 4, format: layout.weightFormat },
    {
      name: `${base}.q_scale`,
      shape: [N, groups],
      dtype: scaleDType,
      bytes: N * groups * DTYPE_BYTES[scaleDType],
      diskBytes: diskBytes(scaleDType, scaleFormat, N * groups),
      format: scaleFormat,
    },
  ];
}

/** Bytes of a `[N, K]` weight in `layout`, in memory and on disk, derived from the table. */
export function webGpuBytes(layout: WebGpuLayout, N: number, K: number): { bytes: number; diskBytes: number } {
  const specs = webGpuTensorSpecs(layout, 'w.weight', N, K);
  return {
    bytes: specs.reduce((sum, spec) => sum + spec.bytes, 0),
    diskBytes: specs.reduce((sum, spec) => sum + spec.diskBytes, 0),
  };
}

// ============================================================================================ tensors

export interface WebGpuGroupTensor {
  readonly kind: 'group-quant';
  readonly layout: WebGpuLayout;
  readonly N: number;
  readonly K: number;
  /** uint32 `[N, ceil(K/32)·32/elementsPerWord]`. */
  readonly qWeight: Uint32Array;
  /** `[N, ceil(K/32)]`: fp16 bits (modelDType float16) or float32 values. */
  readonly qScale: Uint16Array | Float32Array;
}

export interface WebGpuPlainTensor {
  readonly kind: 'no-quant';
  readonly layout: WebGpuLayout;
  readonly N: number;
  readonly K: number;
  /** `[N, K]`: fp16 bits or float32 values. */
  readonly weight: Uint16Array | Float32Array;
}

export type WebGpuTensor = WebGpuGroupTensor | WebGpuPlainTensor;

/** Allocates the (zeroed) tensors of a `[N, K]` weight in `layout`. */
export function createWebGpuTensor(name: string, N: number, K: number): WebGpuTensor {
  const layout = webGpuLayout(name);
  checkShape(layout.name, layout.groupSize, N, K);
  if (layout.kind === 'no-quant') {
    const weight = layout.modelDType === 'float16' ? new Uint16Array(N * K) : new Float32Array(N * K);
    return { kind: 'no-quant', layout, N, K, weight };
  }
  const groups = ceilDivide(K, layout.groupSize);
  const qWeight = new Uint32Array(N * groups * (layout.groupSize / layout.elementsPerWord));
  const qScale = layout.scaleDType === 'float16' ? new Uint16Array(N * groups) : new Float32Array(N * groups);
  return { kind: 'group-quant', layout, N, K, qWeight, qScale };
}

// ========================================================================================= the kernels

/** The float value of a number rounded to float32 and then to fp16 (round to nearest even). */
function roundToHalf(value: number): number {
  return F16_TO_F32_VALUES[f32ToF16(value)]!;
}

/**
 * MLC int4 (q4f16_1 / q4f32_1), one row. `GroupQuantize._quantize` in the model dtype:
 * - the weight is first cast to the model dtype (`model.to(dtype=model_dtype)`; an fp16 checkpoint is
 *   unchanged by it);
 * - `max_abs` = max |w| over the group's positions < K (`te.max` of `te.abs`; NaN never wins here);
 * - `scale = max_abs / max_int` with max_int = 7, rounded to the model dtype;
 * - `level = min(max(round(w / scale + max_int), 0), 2·max_int)`: every operation rounds to the model
 *   dtype (LLVM promotes an f16 operation to f32 and truncates back, which is exact for one f16 division or
 *   addition: 24 ≥ 2·11 + 2 bits), and `round` is ties-to-even (`nearbyint`), so levels are 0..14;
 * - an all-zero group has scale 0 and 0/0 = NaN in MLC (undefined bytes); we store level 7 (zero) with
 *   scale 0, and a NaN weight also gets level 7;
 * - `pack_weight`: `word = Σ_r level[8·j + r] << 4r`, so element 0 of a word is its lowest nibble, and
 *   positions past K (K not a multiple of 32) are 0.
 * Doubles make the f16 steps exact: a quotient or sum of two f16 values rounded to f32 and then f16 is
 * the correctly rounded f16 result (the same double-rounding bound).
 */
function quantizeRowMlcInt4(tensor: WebGpuGroupTensor, src: Float32Array, srcOffset: number, row: number): void {
  const { layout, K, qWeight, qScale } = tensor;
  const halfModel = layout.modelDType === 'float16';
  const halfScales = qScale instanceof Uint16Array ? qScale : null;
  const floatScales = qScale instanceof Float32Array ? qScale : null;
  const groups = ceilDivide(K, 32);
  const maxInt = 7;
  for (let group = 0; group < groups; group++) {
    const start = group * 32;
    const count = Math.min(32, K - start);
    const x = srcOffset + start;
    let maxAbs = 0;
    for (let j = 0; j < count; j++) {
      const magnitude = Math.abs(halfModel ? roundToHalf(src[x + j]!) : src[x + j]!);
      if (magnitude > maxAbs) maxAbs = magnitude;
    }
    let scale: number;
    if (halfScales !== null) {
      const half = f32ToF16(maxAbs / maxInt);
      halfScales[row * groups + group] = half;
      scale = F16_TO_F32_VALUES[half]!;
    } else {
      scale = fround(maxAbs / maxInt);
      floatScales![row * groups + group] = scale;
    }
    const wordBase = (row * groups + group) * 4;
    for (let word = 0; word < 4; word++) {
      let packed = 0;
      for (let r = 0; r < 8; r++) {
        const j = word * 8 + r;
        if (j >= count) break;
        let level = maxInt;
        if (scale !== 0) {
          const value = src[x + j]!;
          const shifted = halfModel
            ? roundToHalf(roundToHalf(roundToHalf(value) / scale) + maxInt)
            : fround(fround(value / scale) + maxInt);
          level = clampLevel(roundHalfToEven(shifted), 0, 2 * maxInt, maxInt);
        }
        packed |= level << (4 * r);
      }
      qWeight[wordBase + word] = packed >>> 0;
    }
  }
}

/**
 * polyquant int8 (q8f16_pq / q8f32_pq), one row; docs/webgpu-int8-layout.md is the specification:
 * - `max_abs` = max |w| over the group's positions < K (float32 input; NaN never wins);
 * - `scale32 = float32(max_abs / 127)`; the stored scale is scale32 (q8f32) or fp16(scale32) rounded to
 *   nearest even (q8f16);
 * - `level = clamp(roundTiesToEven(float32(w / stored)), −127, 127)`, against the *stored* scale; 0 when the
 *   stored scale is 0; NaN weights give 0;
 * - `word = Σ_r (level[4·j + r] & 0xFF) << 8r`: two's complement bytes, element 0 in the lowest byte;
 *   positions past K are 0.
 */
function quantizeRowPolyquantInt8(tensor: WebGpuGroupTensor, src: Float32Array, srcOffset: number, row: number): void {
  const { K, qWeight, qScale } = tensor;
  const halfScales = qScale instanceof Uint16Array ? qScale : null;
  const floatScales = qScale instanceof Float32Array ? qScale : null;
  const groups = ceilDivide(K, 32);
  for (let group = 0; group < groups; group++) {
    const start = group * 32;
    const count = Math.min(32, K - start);
    const x = srcOffset + start;
    let maxAbs = 0;
    for (let j = 0; j < count; j++) {
      const magnitude = Math.abs(src[x + j]!);
      if (magnitude > maxAbs) maxAbs = magnitude;
    }
    const scale32 = fround(maxAbs / 127);
    let scale = scale32;
    if (halfScales !== null) {
      const half = f32ToF16(scale32);
      halfScales[row * groups + group] = half;
      scale = F16_TO_F32_VALUES[half]!;
    } else {
      floatScales![row * groups + group] = scale32;
    }
    const wordBase = (row * groups + group) * 8;
    for (let word = 0; word < 8; word++) {
      let packed = 0;
      for (let r = 0; r < 4; r++) {
        const j = word * 4 + r;
        if (j >= count) break;
        const level = scale !== 0 ? clampLevel(roundHalfToEven(fround(src[x + j]! / scale)), -127, 127, 0) : 0;
        packed |= (level & 0xff) << (8 * r);
      }
      qWeight[wordBase + word] = packed >>> 0;
    }
  }
}

/**
 * Writes rows of a no-quant layout: fp16 rounds to nearest even (MLC casts with `astype`), f32 copies. The
 * fp16 rule is ggml's F16 (both are float.ts `f32BitsToF16Bits`), so under the wasm backend ggml F16's
 * WebAssembly kernel writes them (test/quant-wasm.test.ts holds it to the same rule).
 */
function copyPlainRows(tensor: WebGpuPlainTensor, rows: Float32Array, firstRow: number): void {
  const { K, weight } = tensor;
  const offset = firstRow * K;
  if (!(weight instanceof Uint16Array)) {
    weight.set(rows, offset);
    return;
  }
  const kernel = wasmQuantizer(GGML_TYPES.F16);
  if (kernel === undefined) f32ToF16Array(rows, weight.subarray(offset, offset + rows.length));
  else kernel(rows, 0, rows.length / K, K, new Uint8Array(weight.buffer, weight.byteOffset, weight.byteLength), offset * 2, null);
}

/**
 * What the WebAssembly kernel needs to know of a group layout: which quantizer, whether it computes in
 * fp16, and how q_scale is written (`bf16`: the tensor cache's encoding of the float32 scale).
 */
function webGpuKernelLayout(layout: WebGpuLayout, bf16Scales: boolean): WebGpuKernelLayout {
  return {
    int8: layout.source === 'polyquant',
    halfArithmetic: layout.source === 'mlc' && layout.modelDType === 'float16',
    scaleEncoding: layout.scaleDType === 'float16' ? 'f16' : bf16Scales ? 'bf16' : 'f32',
  };
}

/**
 * The WebAssembly kernel (assembly/webgpu.ts: the same bytes as the kernels above) on `rowCount` rows of
 * `rows` into rows `firstRow…` of a group tensor, when the wasm backend is chosen. Returns whether it ran.
 */
function quantizeWebGpuRowsWasm(tensor: WebGpuGroupTensor, rows: Float32Array, rowCount: number, firstRow: number): boolean {
  const kernel = wasmWebGpuQuantizer();
  if (kernel === undefined) return false;
  const { layout, K, qWeight, qScale } = tensor;
  const groups = ceilDivide(K, layout.groupSize);
  const part = (array: Uint32Array | Uint16Array | Float32Array, perRow: number): Uint8Array => {
    const rowBytes = perRow * array.BYTES_PER_ELEMENT;
    return new Uint8Array(array.buffer, array.byteOffset + firstRow * rowBytes, rowCount * rowBytes);
  };
  const wordsPerRow = groups * (layout.groupSize / layout.elementsPerWord);
  kernel(webGpuKernelLayout(layout, false), rows, 0, rowCount, K, part(qWeight, wordsPerRow), part(qScale, groups));
  return true;
}

/**
 * Quantizes whole rows into an existing tensor (from createWebGpuTensor): `rows` holds a multiple of K
 * floats, which become rows `firstRow…`. For streaming a weight in row chunks.
 */
export function quantizeWebGpuRowsInto(tensor: WebGpuTensor, rows: Float32Array, firstRow: number): void {
  const { layout, K, N } = tensor;
  checkWholeRows(layout.name, layout.groupSize, rows.length, K);
  const rowCount = rows.length / K;
  checkRowRange(layout.name, firstRow, rowCount, N);
  if (tensor.kind === 'no-quant') {
    copyPlainRows(tensor, rows, firstRow);
    return;
  }
  if (quantizeWebGpuRowsWasm(tensor, rows, rowCount, firstRow)) return;
  const kernel = layout.source === 'mlc' ? quantizeRowMlcInt4 : quantizeRowPolyquantInt8;
  for (let row = 0; row < rowCount; row++) kernel(tensor, rows, row * K, firstRow + row);
}

/** Quantizes a whole weight `[N, K]` (row-major float32) to `layout`. */
export function quantizeWebGpu(name: string, weight: Float32Array, N: number, K: number): WebGpuTensor {
  const layout = webGpuLayout(name);
  checkWeightMatrix(layout.name, layout.groupSize, weight, N, K);
  const tensor = createWebGpuTensor(layout.name, N, K);
  quantizeWebGpuRowsInto(tensor, weight, 0);
  return tensor;
}

export interface WebGpuDequantizeOptions {
  /**
   * Use the float32 values as the tensor cache stores them (`f32-to-bf16` records: q4f32_1's scales, q0f32's
   * weights) rather than as computed. Default false.
   */
  readonly asStoredOnDisk?: boolean;
}

/**
 * What a kernel reading the layout computes, as `[N, K]` float32:
 * - MLC int4: `(level − 7) · scale` in the model dtype (`GroupQuantize._dequantize`), so q4f16_1 rounds the
 *   product to fp16;
 * - polyquant int8: `f32(level) · f32(scale)` in float32 (docs/webgpu-int8-layout.md);
 * - no-quant: the stored values.
 */
export function dequantizeWebGpu(tensor: WebGpuTensor, options: WebGpuDequantizeOptions = {}): Float32Array {
  const { layout, N, K } = tensor;
  const onDisk = options.asStoredOnDisk === true;
  const out = new Float32Array(N * K);
  if (tensor.kind === 'no-quant') {
    const { weight } = tensor;
    for (let i = 0; i < N * K; i++) {
      out[i] = weight instanceof Uint16Array ? F16_TO_F32_VALUES[weight[i]!]! : onDisk ? bf16ToF32(f32ToTensorCacheBf16(weight[i]!)) : weight[i]!;
    }
    return out;
  }
  const { qWeight, qScale } = tensor;
  const groups = ceilDivide(K, layout.groupSize);
  const wordsPerGroup = layout.groupSize / layout.elementsPerWord;
  const bits = layout.bits;
  const mask = (1 << bits) - 1;
  const halfModel = layout.modelDType === 'float16';
  const mlc = layout.source === 'mlc';
  for (let row = 0; row < N; row++) {
    for (let group = 0; group < groups; group++) {
      const index = row * groups + group;
      let scale = qScale instanceof Uint16Array ? F16_TO_F32_VALUES[qScale[index]!]! : qScale[index]!;
      if (onDisk && layout.scaleFormat === 'f32-to-bf16') scale = bf16ToF32(f32ToTensorCacheBf16(scale));
      const start = group * layout.groupSize;
      const count = Math.min(layout.groupSize, K - start);
      for (let j = 0; j < count; j++) {
        const word = qWeight[index * wordsPerGroup + Math.floor(j / layout.elementsPerWord)]!;
        const field = (word >>> (bits * (j % layout.elementsPerWord))) & mask;
        let value: number;
        if (mlc) {
          const product = (field - layout.levelOffset) * scale;
          value = halfModel ? roundToHalf(product) : fround(product);
        } else {
          value = fround(((field << 24) >> 24) * scale);
        }
        out[row * K + start + j] = value;
      }
    }
  }
  return out;
}

// ================================================================= the tensor cache's float32 storage

/**
 * How float32 tensors go to disk: `raw` (as is, `format: "raw"`, which every MLC reader accepts) or `bf16`
 * (mlc_llm convert_weight's `f32-to-bf16`: the upper 16 bits, rounded as below). The layout table's
 * `weightFormat` / `scaleFormat` say which tensors MLC encodes; q8f32_pq's scales stay raw either way.
 */
export type TensorCacheStorage = 'raw' | 'bf16';
export const TENSOR_CACHE_STORAGES: readonly TensorCacheStorage[] = ['raw', 'bf16'];

/** bf16_limit of tvmjs.py: float32 max with its low 16 bits cleared (0x7f7f0000 ≈ 3.3895e38). */
const BF16_LIMIT_BITS = 0x7f7f0000;

/**
 * Float32 bits → bf16 bits as the tensor cache's dumper writes them (apache/tvm python/tvm/contrib/
 * tvmjs.py `_convert_f32_to_bf16`): round to nearest even for |v| < bf16_limit, and plain truncation
 * otherwise (values past the limit, ±inf and NaN, whose comparisons are false in numpy). This differs from
 * ggml's conversion (tensor/float.ts) only there: ggml rounds 3.4e38 up to inf and quiets NaNs.
 */
export function f32BitsToTensorCacheBf16Bits(bits: number): number {
  if ((bits & 0x7fffffff) < BF16_LIMIT_BITS) return ((bits >>> 0) + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
  return bits >>> 16;
}

/** A number rounded to float32, then to bf16 bits by the tensor cache's rule. */
export function f32ToTensorCacheBf16(value: number): number {
  return f32BitsToTensorCacheBf16Bits(f32Bits(value));
}

/** Float32 values → the tensor cache's bf16 bits (into `out` when given). */
export function f32ToTensorCacheBf16Array(values: Float32Array, out: Uint16Array = new Uint16Array(values.length)): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32BitsToTensorCacheBf16Bits(bits[i]!);
  return out;
}

/** Whether a float32 part (`weight` / `scale`) of `layout` is stored as bf16 under `storage`. */
export function webGpuStoresBf16(layout: WebGpuLayout, part: 'weight' | 'scale', storage: TensorCacheStorage): boolean {
  if (storage === 'raw') return false;
  return (part === 'weight' ? layout.weightFormat : layout.scaleFormat) === 'f32-to-bf16';
}

// ============================================================================ row chunks for the pool

const CHUNK_ID = /^webgpu:([a-z0-9_]+):(raw|bf16)$/;

/** The pool's id for rows of a weight in `layout`, float32 parts stored per `storage`: `webgpu:q4f32_1:raw`. */
export function webGpuChunkLayoutId(layout: WebGpuLayoutName, storage: TensorCacheStorage): string {
  return `webgpu:${layout}:${storage}`;
}

function parseChunkId(id: string): { layout: WebGpuLayout; storage: TensorCacheStorage } | undefined {
  const match = CHUNK_ID.exec(id);
  if (match === null || !isWebGpuLayoutName(match[1])) return undefined;
  return { layout: WEBGPU_LAYOUTS[match[1]], storage: match[2] as TensorCacheStorage };
}

/** Whether `id` names a WebGPU layout the quantizer pool can produce in row chunks (webGpuChunkLayoutId). */
export function isWebGpuChunkLayout(id: string): boolean {
  return parseChunkId(id) !== undefined;
}

function chunkLayout(id: string): { layout: WebGpuLayout; storage: TensorCacheStorage } {
  const parsed = parseChunkId(id);
  if (parsed === undefined) throw new PolyquantError(ERROR_CODES.USAGE, `${JSON.stringify(id)} is not a WebGPU chunk layout (webgpu:LAYOUT:raw|bf16)`);
  return parsed;
}

/**
 * Bytes on disk of each record a chunk of `rows` whole rows of length K becomes, in the order they are
 * packed: `[q_weight, q_scale]` for group layouts, `[weight]` for no-quant ones. Rows are independent, so
 * each part is a contiguous run of its whole record.
 */
export function webGpuChunkParts(id: string, rows: number, K: number): number[] {
  const { layout, storage } = chunkLayout(id);
  return webGpuTensorSpecs(layout, 'w.weight', rows, K).map((spec, index) => {
    const part = index === 0 ? 'weight' : 'scale';
    return spec.dtype === 'float32' && !webGpuStoresBf16(layout, part, storage) ? spec.bytes : spec.diskBytes;
  });
}

function bytesOf(array: ArrayBufferView): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

/**
 * Quantizes a chunk of whole rows of a torch `[N, K]` weight (or an embedding) in a WebGPU layout and packs
 * its records' parts back to back as they go to disk (webGpuChunkParts): little-endian words, fp16 bits,
 * float32 values or, where the storage encodes them, the tensor cache's bf16.
 */
export function quantizeWebGpuChunk(id: string, rows: Float32Array, K: number): Uint8Array {
  const { layout, storage } = chunkLayout(id);
  checkWholeRows(layout.name, layout.groupSize, rows.length, K);
  const kernel = layout.kind === 'group-quant' ? wasmWebGpuQuantizer() : undefined;
  if (kernel !== undefined) {
    // The WebAssembly kernel writes both parts straight into their places in the chunk's output.
    const count = rows.length / K;
    checkShape(layout.name, layout.groupSize, count, K);
    const [weightBytes, scaleBytes] = webGpuChunkParts(id, count, K) as [number, number];
    const out = new Uint8Array(weightBytes + scaleBytes);
    const bf16Scales = webGpuStoresBf16(layout, 'scale', storage);
    kernel(webGpuKernelLayout(layout, bf16Scales), rows, 0, count, K, out.subarray(0, weightBytes), out.subarray(weightBytes));
    return out;
  }
  const tensor = createWebGpuTensor(layout.name, rows.length / K, K);
  quantizeWebGpuRowsInto(tensor, rows, 0);
  const stored = (values: Uint16Array | Float32Array, part: 'weight' | 'scale'): Uint8Array =>
    values instanceof Float32Array && webGpuStoresBf16(layout, part, storage) ? bytesOf(f32ToTensorCacheBf16Array(values)) : bytesOf(values);
  if (tensor.kind === 'no-quant') return stored(tensor.weight, 'weight');
  const weight = bytesOf(tensor.qWeight);
  const scale = stored(tensor.qScale, 'scale');
  const out = new Uint8Array(weight.length + scale.length);
  out.set(weight, 0);
  out.set(scale, weight.length);
  return out;
}
