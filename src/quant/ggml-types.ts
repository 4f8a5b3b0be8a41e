/**
 * The ggml type table (STYLE.md §2): one row per ggml tensor type polyquant can write, with ggml's type
 * id, block size in elements, block size in bytes, the output formats that carry it, whether ggml uses
 * importance weights for it, the analytical round-trip error bound, and its row kernels. Sizes, CLI
 * choices and the quantize/dequantize dispatch all derive from this table.
 *
 * Pinned to upstream (test/quant-table.test.ts holds every row to these): type ids from `enum ggml_type`
 * in ggml/include/ggml.h; block elements and bytes from the `block_*` structs in ggml/src/ggml-common.h
 * (QK4_0 = 32, QK_K = 256, …) and `type_traits` in ggml/src/ggml.c; specs/gguf.md §1.3 and the golden
 * manifest (shared/golden/ggml/manifest.json) repeat them.
 */

import { dequantizeRowBF16, dequantizeRowF16, dequantizeRowF32, quantizeRowBF16, quantizeRowF16, quantizeRowF32 } from './float-types.js';
import { dequantizeRowIQ4_NL, dequantizeRowIQ4_XS, quantizeRowIQ4_NL, quantizeRowIQ4_XS } from './iquants.js';
import {
  dequantizeRowQ2_K,
  dequantizeRowQ3_K,
  dequantizeRowQ4_K,
  dequantizeRowQ5_K,
  dequantizeRowQ6_K,
  quantizeRowQ2_K,
  quantizeRowQ3_K,
  quantizeRowQ4_K,
  quantizeRowQ5_K,
  quantizeRowQ6_K,
} from './kquants.js';
import {
  dequantizeRowQ4_0,
  dequantizeRowQ4_1,
  dequantizeRowQ5_0,
  dequantizeRowQ5_1,
  dequantizeRowQ8_0,
  quantizeRowQ4_0,
  quantizeRowQ4_1,
  quantizeRowQ5_0,
  quantizeRowQ5_1,
  quantizeRowQ8_0,
} from './legacy.js';

/** ggml type names exactly as ggml spells them (`ggml_type_name`). */
export type GgmlTypeName =
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'Q8_0'
  | 'Q4_0'
  | 'Q4_1'
  | 'Q5_0'
  | 'Q5_1'
  | 'Q2_K'
  | 'Q3_K'
  | 'Q4_K'
  | 'Q5_K'
  | 'Q6_K'
  | 'IQ4_NL'
  | 'IQ4_XS';

/** The artifact formats polyquant writes. */
export type OutputFormat = 'gguf' | 'onnx' | 'webgpu';

/**
 * Quantizes one row: `n` floats from `src[srcOffset…]` (n a multiple of the block size) into
 * n/blockElements blocks at `dst[dstOffset…]`. `importance` holds one weight per column of the row
 * (ggml's `quant_weights` / imatrix), or is null.
 */
export type QuantizeRowKernel = (
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
) => void;

/** Dequantizes the blocks of one row of `n` elements at `src[srcOffset…]` into `dst[dstOffset…]`. */
export type DequantizeRowKernel = (src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number) => void;

export interface GgmlTypeInfo {
  readonly name: GgmlTypeName;
  /** `enum ggml_type` value (ggml.h), also the GGUF tensor-info type. */
  readonly id: number;
  /** Elements per block (`ggml_blck_size`). */
  readonly blockElements: number;
  /** Bytes per block (`ggml_type_size`). */
  readonly blockBytes: number;
  /** Output formats that store tensors of this type. */
  readonly formats: readonly OutputFormat[];
  /** Whether ggml's quantizer uses importance weights for this type ('ignored': same bytes either way). */
  readonly importance: 'used' | 'ignored';
  /**
   * The per-element bound on |x − dequantize(quantize(x))| that the property test checks, in terms of
   * the decoded block (δ(s) = half an fp16 ulp of a stored scale s, the most its rounding can move s).
   */
  readonly roundTripBound: string;
  readonly quantizeRow: QuantizeRowKernel;
  readonly dequantizeRow: DequantizeRowKernel;
}

const GGUF_ONLY: readonly OutputFormat[] = ['gguf'];

/** The importance paths fit d by weighted least squares: no per-element bound, a per-block one. */
const WEIGHTED_SYMMETRIC =
  'With importance (make_qx_quants): the block\'s weighted RMS error (w = qw·√(σ² + x²)) ≤ amax/nmax + nmax·δ(d)';
const WEIGHTED_ASYMMETRIC =
  'With importance (make_qkx3_quants): the block\'s weighted RMS error ≤ (max − min(min, 0))/(2·nmax) + nmax·δ(d) + δ(m)';

const NEAREST_K_GRID =
  'x̂ is the point of the decoded grid {d_sub·q − m_sub : q = 0…nmax} nearest to x (up to float32 rounding): ' +
  '|x − x̂| ≤ d_sub/2 inside the grid, the distance to its end outside it';

export const GGML_TYPES: Readonly<Record<GgmlTypeName, GgmlTypeInfo>> = {
  F32: {
    name: 'F32',
    id: 0,
    blockElements: 1,
    blockBytes: 4,
    formats: GGUF_ONLY,
    importance: 'ignored',
    roundTripBound: 'exact: x̂ = x bit for bit',
    quantizeRow: quantizeRowF32,
    dequantizeRow: dequantizeRowF32,
  },
  F16: {
    name: 'F16',
    id: 1,
    blockElements: 1,
    blockBytes: 2,
    formats: GGUF_ONLY,
    importance: 'ignored',
    roundTripBound: '|x − x̂| ≤ half an fp16 ulp of x (≤ |x|·2^-11, ≥ 2^-25 below 2^-14) for |x| < 65520; beyond, ±inf',
    quantizeRow: quantizeRowF16,
    dequantizeRow: dequantizeRowF16,
  },
  BF16: {
    name: 'BF16',
    id: 30,
    blockElements: 1,
    blockBytes: 2,
    formats: GGUF_ONLY,
    importance: 'ignored',
    roundTripBound: '|x − x̂| ≤ half a bf16 ulp of x (≤ |x|·2^-8)',
    quantizeRow: quantizeRowBF16,
    dequantizeRow: dequantizeRowBF16,
  },
  Q8_0: {
    name: 'Q8_0',
    id: 8,
    blockElements: 32,
    blockBytes: 34,
    formats: GGUF_ONLY,
    importance: 'ignored',
    roundTripBound: 'd = amax/127 covers the block: |x − x̂| ≤ d/2 + 127·δ(d)',
    quantizeRow: quantizeRowQ8_0,
    dequantizeRow: dequantizeRowQ8_0,
  },
  Q4_0: {
    name: 'Q4_0',
    id: 2,
    blockElements: 32,
    blockBytes: 18,
    formats: GGUF_ONLY,
    importance: 'used',
    roundTripBound:
      'grid {d·(q − 8)}: |x − x̂| ≤ |d|/2 + 8·δ(d); elements near −max clamp to q = 15, ≤ |d| + 8·δ(d). ' +
      WEIGHTED_SYMMETRIC,
    quantizeRow: quantizeRowQ4_0,
    dequantizeRow: dequantizeRowQ4_0,
  },
  Q4_1: {
    name: 'Q4_1',
    id: 3,
    blockElements: 32,
    blockBytes: 20,
    formats: GGUF_ONLY,
    importance: 'used',
    roundTripBound: `grid {d·q + m}, d = (max − min)/15 covers the block: |x − x̂| ≤ d/2 + 15·δ(d) + δ(m). ${WEIGHTED_ASYMMETRIC}`,
    quantizeRow: quantizeRowQ4_1,
    dequantizeRow: dequantizeRowQ4_1,
  },
  Q5_0: {
    name: 'Q5_0',
    id: 6,
    blockElements: 32,
    blockBytes: 22,
    formats: GGUF_ONLY,
    importance: 'used',
    roundTripBound:
      'grid {d·(q − 16)}: |x − x̂| ≤ |d|/2 + 16·δ(d); elements near −max clamp to q = 31, ≤ |d| + 16·δ(d). ' +
      WEIGHTED_SYMMETRIC,
    quantizeRow: quantizeRowQ5_0,
    dequantizeRow: dequantizeRowQ5_0,
  },
  Q5_1: {
    name: 'Q5_1',
    id: 7,
    blockElements: 32,
    blockBytes: 24,
    formats: GGUF_ONLY,
    importance: 'used',
    roundTripBound: `grid {d·q + m}, d = (max − min)/31 covers the block: |x − x̂| ≤ d/2 + 31·δ(d) + δ(m). ${WEIGHTED_ASYMMETRIC}`,
    quantizeRow: quantizeRowQ5_1,
    dequantizeRow: dequantizeRowQ5_1,
  },
  Q2_K: {
    name: 'Q2_K',
    id: 10,
    blockElements: 256,
    blockBytes: 84,
    formats: GGUF_ONLY,
    importance: 'used',
    roundTripBound: `${NEAREST_K_GRID} (nmax 3, 16 sub-blocks of 16)`,
    quantizeRow: quantizeRowQ2_K,
    dequantizeRow: dequantizeRowQ2_K,
  },
  Q3_K: {
    name: 'Q3_K',
    id: 11,
    blockElements: 256,
    blockBytes: 110,
    formats: GGUF_ONLY,
    importance: 'used',
    roundTripBound: 'x̂ is the point of {d_sub·q : q = −4…3} nearest to x: ≤ |d_sub|/2 inside, the distance to the end outside',
    quantizeRow: quantizeRowQ3_K,
    dequantizeRow: dequantizeRowQ3_K,
  },
  Q4_K: {
    name: 'Q4_K',
    id: 12,
    blockElements: 256,
    blockBytes: 144,
    formats: GGUF_ONLY,
    importance: 'used',
    roundTripBound: `${NEAREST_K_GRID} (nmax 15, 8 sub-blocks of 32)`,
    quantizeRow: quantizeRowQ4_K,
    dequantizeRow: dequantizeRowQ4_K,
  },
  Q5_K: {
    name: 'Q5_K',
    id: 13,
    blockElements: 256,
    blockBytes: 176,
    formats: GGUF_ONLY,
    importance: 'used',
    roundTripBound: `${NEAREST_K_GRID} (nmax 31, 8 sub-blocks of 32)`,
    quantizeRow: quantizeRowQ5_K,
    dequantizeRow: dequantizeRowQ5_K,
  },
  Q6_K: {
    name: 'Q6_K',
    id: 14,
    blockElements: 256,
    blockBytes: 210,
    formats: GGUF_ONLY,
    importance: 'used',
    roundTripBound: 'x̂ is the point of {d_sub·q : q = −32…31} nearest to x: ≤ |d_sub|/2 inside, the distance to the end outside',
    quantizeRow: quantizeRowQ6_K,
    dequantizeRow: dequantizeRowQ6_K,
  },
  IQ4_NL: {
    name: 'IQ4_NL',
    id: 20,
    blockElements: 32,
    blockBytes: 18,
    formats: GGUF_ONLY,
    importance: 'used',
    roundTripBound:
      'x̂ is within 2·127·δ(d) of the point of the non-linear grid {d·kvalues_iq4nl[q]} nearest to x ' +
      '(≤ 12·|d| inside the grid: half the widest gap of the table, 24)',
    quantizeRow: quantizeRowIQ4_NL,
    dequantizeRow: dequantizeRowIQ4_NL,
  },
  IQ4_XS: {
    name: 'IQ4_XS',
    id: 23,
    blockElements: 256,
    blockBytes: 136,
    formats: GGUF_ONLY,
    importance: 'used',
    roundTripBound:
      'x̂ is within 2·127·32·δ(d) of the point of the block grid {d·(l − 32)·kvalues_iq4nl[q]} nearest to x ' +
      '(≤ 12·|d·(l − 32)| inside the grid)',
    quantizeRow: quantizeRowIQ4_XS,
    dequantizeRow: dequantizeRowIQ4_XS,
  },
};

/** Every ggml type name, in table order. */
export const GGML_TYPE_NAMES: readonly GgmlTypeName[] = Object.keys(GGML_TYPES) as GgmlTypeName[];

/** ggml type id → name, derived from the table (for GGUF readers). */
export const GGML_TYPE_BY_ID: ReadonlyMap<number, GgmlTypeName> = new Map(GGML_TYPE_NAMES.map((name) => [GGML_TYPES[name].id, name]));

export function isGgmlTypeName(value: unknown): value is GgmlTypeName {
  return typeof value === 'string' && Object.hasOwn(GGML_TYPES, value);
}

/** The ggml types a given output format can carry (CLI `choices`, help text). */
export function ggmlTypesForFormat(format: OutputFormat): GgmlTypeName[] {
  return GGML_TYPE_NAMES.filter((name) => GGML_TYPES[name].formats.includes(format));
}

/** Whether a row of `nPerRow` elements splits into whole blocks of `scheme`. */
export function rowFitsBlocks(scheme: GgmlTypeName, nPerRow: number): boolean {
  return Number.isSafeInteger(nPerRow) && nPerRow > 0 && nPerRow % GGML_TYPES[scheme].blockElements === 0;
}
