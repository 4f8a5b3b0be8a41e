/**
 * GPTQ (gptq.ts) for ggml's block formats: `GptqGroupQuantizer`s that write standard ggml blocks, so a
 * GPTQ-optimised GGUF loads in any llama.cpp. A group is one block (Q4_K/Q5_K/Q6_K: a 256-element
 * super-block; Q8_0/Q4_0/Q5_0: 32 elements).
 *
 * - fitGroup: ggml's own choice of the block's parameters (d, dmin, the 6-bit sub-block scales and mins,
 *   Q6_K's int8 sub-scales, the legacy d) from the group's current values, with the importance weights
 *   exactly as llama-quantize passes them: the type's row kernel itself (kquants.ts, legacy.ts) runs on the
 *   group, so the parameters are the bytes ggml would write for those values.
 * - quantize: the level ggml's final pass picks for the value under the stored parameters. The K-quants
 *   requantize against the fp16-rounded scales (kquants.ts): level = clamp(nearest_int((x + m)/s)); a
 *   sub-block whose stored scale is 0 keeps the level the fit chose (as ggml does). Q8_0, and Q4_0/Q5_0
 *   without weights, use ggml's reference rule (x·id with id = 1/d before fp16 rounding), clamped to the
 *   type's levels (ggml never needs the clamp; GPTQ-corrected values may). Q4_0/Q5_0 with weights take
 *   make_qx_quants' levels, which come from its best trial scale: for a value the fit saw, that level; for
 *   a value GPTQ has moved since, the nearest level of the stored d.
 *
 * So with nothing to feed back (a diagonal Hessian) the bytes are the RTN bytes of the same importance,
 * byte for byte (test/gptq-ggml.test.ts), and with a calibration Hessian only the levels differ, chosen to
 * cancel each other's error on the calibration activations.
 *
 * Where ggml's weighting needs the whole row: Q4_0/Q5_0's importance weights use σ² = the row's mean square
 * (quantize_row_q4_0_impl). GPTQ's rows change as it goes, so σ² is taken from the original row — the
 * value ggml uses, since it sees only the original. The K-quants' σ² is per super-block, from the values.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import * as ggmlMath from './ggml-math.js';
import { GGML_TYPES, type GgmlTypeInfo, type GgmlTypeName } from './ggml-types.js';
import { type GptqFactor, type GptqGroupQuantizer, gptqQuantizeRows } from './gptq.js';
import { makeQxQuants } from './kquant-helpers.js';
import { wasmQuantizer } from './wasm/runtime.js';

const { clamp, fround, nearestInt, readF16, roundHalfAwayFromZero, truncateToInt8, writeF16 } = ggmlMath;

/** The ggml types with a GPTQ quantizer: what q4_k_m, q5_k_m, q6_k, q8_0, q4_0 and q5_0 files hold (fallbacks included). */
export const GPTQ_GGML_TYPES = ['Q4_K', 'Q5_K', 'Q6_K', 'Q8_0', 'Q4_0', 'Q5_0'] as const satisfies readonly GgmlTypeName[];
export type GptqGgmlType = (typeof GPTQ_GGML_TYPES)[number];

export function isGptqGgmlType(type: string): type is GptqGgmlType {
  return (GPTQ_GGML_TYPES as readonly string[]).includes(type);
}

export interface GgmlGptqOptions {
  /**
   * Importance weights, one per column (the imatrix entry, as llama-quantize passes it); null or absent:
   * the type's unweighted path, as llama-quantize without --imatrix. Types whose ggml quantizer ignores
   * them (Q8_0) ignore them here too.
   */
  readonly importance?: Float32Array | null | undefined;
  /** Names the tensor in errors. */
  readonly tensor?: string | undefined;
}

/** Sub-blocks per group whose (scale, offset) the quantizer keeps per row. */
const MAX_SUB_BLOCKS = 16;

/**
 * Fills `bytes` (rowCount rows of the type, rows firstRow … of the tensor) as GPTQ drives it. `rows`, the
 * original float rows (row r at (r − firstRow)·K), is read for Q4_0/Q5_0's row σ² when weighted.
 */
export class GgmlGptqQuantizer implements GptqGroupQuantizer {
  readonly groupSize: number;
  readonly bytes: Uint8Array;
  private readonly info: GgmlTypeInfo;
  private readonly rowBytes: number;
  private readonly importance: Float32Array | null;
  private readonly group: Float32Array;
  /** Per row of this call: each sub-block's scale (K-quants), or the legacy inverse scale at 0. */
  private readonly scales: Float64Array;
  /** Per row: each sub-block's offset (Q4_K/Q5_K's dmin·m), or the legacy stored d at 0. */
  private readonly offsets: Float64Array;
  /** Q4_0/Q5_0 weighted: the values the current group was fitted to, per row. */
  private readonly fitted: Float32Array | undefined;
  /** Q4_0/Q5_0 weighted: σ² of each original row (NaN until needed). */
  private readonly sigma2: Float64Array | undefined;
  /** fitGroups' output blocks, before they go to their rows. */
  private fittedBlocks = new Uint8Array(0);

  constructor(
    readonly type: GptqGgmlType,
    readonly columns: number,
    readonly rowCount: number,
    readonly firstRow: number,
    private readonly rows: Float32Array | undefined,
    options: GgmlGptqOptions = {},
  ) {
    const info = GGML_TYPES[type];
    if (!Number.isSafeInteger(columns) || columns <= 0 || columns % info.blockElements !== 0) {
      throw new PolyquantError(ERROR_CODES.LIMIT, `${type} needs rows that are a multiple of its block size ${info.blockElements}, but the row length is ${columns}`, {
        tensor: options.tensor,
      });
    }
    const importance = options.importance ?? null;
    if (importance !== null && importance.length !== columns) {
      throw new PolyquantError(ERROR_CODES.USAGE, `the importance weights have ${importance.length} entries but rows have ${columns} columns`, { tensor: options.tensor });
    }
    this.info = info;
    this.groupSize = info.blockElements;
    this.rowBytes = (columns / info.blockElements) * info.blockBytes;
    this.bytes = new Uint8Array(rowCount * this.rowBytes);
    this.importance = info.importance === 'ignored' ? null : importance;
    this.group = new Float32Array(this.groupSize);
    this.scales = new Float64Array(rowCount * MAX_SUB_BLOCKS);
    this.offsets = new Float64Array(rowCount * MAX_SUB_BLOCKS);
    const weightedLegacy = this.importance !== null && (type === 'Q4_0' || type === 'Q5_0');
    if (weightedLegacy && (rows === undefined || rows.length < rowCount * columns)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `GPTQ ${type} with importance weights needs the original rows (their σ²)`, { tensor: options.tensor });
    }
    this.fitted = weightedLegacy ? new Float32Array(rowCount * this.groupSize) : undefined;
    this.sigma2 = weightedLegacy ? new Float64Array(rowCount).fill(Number.NaN) : undefined;
  }

  /** Byte offset of the block holding `column` in row `local` of this call. */
  private blockAt(local: number, column: number): number {
    return local * this.rowBytes + (column / this.groupSize) * this.info.blockBytes;
  }

  /**
   * The K-quants' fits of many rows in one call of the type's WebAssembly kernel (the TypeScript kernel's
   * bytes, api.ts), then each row's block and parameters taken as fitGroup takes them.
   */
  fitGroups(firstRow: number, count: number, column: number, values: Float32Array, stride: number, width: number): void {
    const kernel = this.type === 'Q4_K' || this.type === 'Q5_K' || this.type === 'Q6_K' ? wasmQuantizer(this.info) : undefined;
    if (kernel === undefined || stride !== width) {
      const row = new Float64Array(width);
      for (let r = 0; r < count; r += 1) {
        for (let i = 0; i < width; i += 1) row[i] = values[r * stride + i] as number;
        this.fitGroup(firstRow + r, column, row);
      }
      return;
    }
    const blockBytes = this.info.blockBytes;
    if (this.fittedBlocks.length < count * blockBytes) this.fittedBlocks = new Uint8Array(count * blockBytes);
    kernel(values, 0, count, width, this.fittedBlocks, 0, this.importance === null ? null : this.importance.subarray(column, column + width));
    for (let r = 0; r < count; r += 1) {
      const local = firstRow + r - this.firstRow;
      const y = this.blockAt(local, column);
      this.bytes.set(this.fittedBlocks.subarray(r * blockBytes, (r + 1) * blockBytes), y);
      this.readParameters(local, y);
    }
  }

  /** Each sub-block's stored scale (and offset) of the K-quant block at y, for row `local`. */
  private readParameters(local: number, y: number): void {
    const bytes = this.bytes;
    const at = local * MAX_SUB_BLOCKS;
    if (this.type === 'Q6_K') {
      const d = readF16(bytes, y + 208);
      for (let j = 0; j < 16; j += 1) this.scales[at + j] = fround(d * ((bytes[y + 192 + j] as number) << 24 >> 24));
      return;
    }
    const d = readF16(bytes, y);
    const dmin = readF16(bytes, y + 2);
    for (let j = 0; j < 8; j += 1) {
      this.scales[at + j] = fround(d * scaleK4(bytes, y + 4, j));
      this.offsets[at + j] = fround(dmin * minK4(bytes, y + 4, j));
    }
  }

  fitGroup(row: number, column: number, values: Float64Array): void {
    const local = row - this.firstRow;
    const n = values.length;
    const group = this.group;
    for (let i = 0; i < n; i += 1) group[i] = values[i] as number;
    const y = this.blockAt(local, column);
    const bytes = this.bytes;
    const at = local * MAX_SUB_BLOCKS;
    switch (this.type) {
      case 'Q4_K':
      case 'Q5_K':
      case 'Q6_K':
        this.info.quantizeRow(group, 0, bytes, y, n, this.importance === null ? null : this.importance.subarray(column, column + n));
        this.readParameters(local, y);
        return;
      case 'Q8_0':
      case 'Q4_0':
      case 'Q5_0': {
        if (this.fitted !== undefined) {
          this.fitWeightedLegacy(local, column, y);
          return;
        }
        this.info.quantizeRow(group, 0, bytes, y, n, null);
        // The reference kernels' inverse scale, from d before its fp16 rounding (quantize_row_q*_ref).
        let d: number;
        if (this.type === 'Q8_0') {
          let amax = 0;
          for (let j = 0; j < n; j += 1) {
            const magnitude = Math.abs(group[j] as number);
            // biome-ignore lint/complexity/useMathMinMax: C macro semantics on NaN
            amax = amax > magnitude ? amax : magnitude;
          }
          d = fround(amax / 127);
        } else {
          let amax = 0;
          let max = 0;
          for (let j = 0; j < n; j += 1) {
            const value = group[j] as number;
            if (amax < Math.abs(value)) {
              amax = Math.abs(value);
              max = value;
            }
          }
          d = fround(max / (this.type === 'Q4_0' ? -8 : -16));
        }
        this.scales[at] = d !== 0 ? fround(1 / d) : 0;
        this.offsets[at] = readF16(bytes, y);
        return;
      }
    }
  }

  /** quantize_row_q4_0_impl / the weighted quantize_row_q5_0: make_qx_quants with qw·√(σ² + x²). */
  private fitWeightedLegacy(local: number, column: number, y: number): void {
    const sigma2 = this.rowSigma2(local);
    const group = this.group;
    const importance = this.importance as Float32Array;
    for (let j = 0; j < 32; j += 1) {
      const value = group[j] as number;
      legacyWeights[j] = (importance[column + j] as number) * fround(Math.sqrt(fround(sigma2 + fround(value * value))));
    }
    const nmax = this.type === 'Q4_0' ? 8 : 16;
    const d = makeQxQuants(32, nmax, group, 0, legacyLevels, 0, legacyWeights, 0);
    const stored = writeF16(this.bytes, y, d);
    for (let j = 0; j < 32; j += 1) writeLegacyLevel(this.bytes, y, this.type as 'Q4_0' | 'Q5_0', j, legacyLevels[j] as number);
    (this.fitted as Float32Array).set(group, local * 32);
    this.offsets[local * MAX_SUB_BLOCKS] = stored;
  }

  /** σ² of the original row, summed as legacy.ts rowMeanSquare does. */
  private rowSigma2(local: number): number {
    const cached = (this.sigma2 as Float64Array)[local] as number;
    if (!Number.isNaN(cached)) return cached;
    const rows = this.rows as Float32Array;
    const K = this.columns;
    let sumSquares = 0;
    for (let j = 0; j < K; j += 1) {
      const value = rows[local * K + j] as number;
      sumSquares = fround(sumSquares + fround(value * value));
    }
    const sigma2 = fround(sumSquares / K);
    (this.sigma2 as Float64Array)[local] = sigma2;
    return sigma2;
  }

  quantize(row: number, column: number, value: number): number {
    const local = row - this.firstRow;
    const e = column % this.groupSize;
    const y = this.blockAt(local, column - e);
    const bytes = this.bytes;
    const at = local * MAX_SUB_BLOCKS;
    switch (this.type) {
      case 'Q4_K':
      case 'Q5_K': {
        const nmax = this.type === 'Q4_K' ? 15 : 31;
        const scale = this.scales[at + (e >>> 5)] as number;
        const offset = this.offsets[at + (e >>> 5)] as number;
        let level: number;
        if (scale === 0) level = readK4Level(bytes, y, this.type, e);
        else {
          level = clamp(nearestInt(fround(fround(value + offset) / scale)), 0, nmax);
          writeK4Level(bytes, y, this.type, e, level);
        }
        return fround(fround(scale * level) - offset);
      }
      case 'Q6_K': {
        const scale = this.scales[at + (e >>> 4)] as number;
        let level: number;
        if (scale === 0) level = readQ6Level(bytes, y, e);
        else {
          level = clamp(nearestInt(fround(value / scale)), -32, 31) + 32;
          writeQ6Level(bytes, y, e, level);
        }
        return fround(scale * (level - 32));
      }
      case 'Q8_0': {
        const inverse = this.scales[at] as number;
        const level = clamp(roundHalfAwayFromZero(fround(value * inverse)), -128, 127);
        bytes[y + 2 + e] = level & 0xff;
        return fround(level * (this.offsets[at] as number));
      }
      case 'Q4_0':
      case 'Q5_0': {
        const nmax = this.type === 'Q4_0' ? 8 : 16;
        const d = this.offsets[at] as number;
        let level: number;
        if (this.fitted !== undefined) {
          if (value === this.fitted[local * 32 + e] || d === 0) level = readLegacyLevel(bytes, y, this.type, e);
          else level = clamp(nearestInt(fround(value / d)), -nmax, nmax - 1) + nmax;
        } else {
          // MIN(nmax·2 − 1, (int8_t)(x·id + nmax + 0.5)), floored at 0 for values past the block's range.
          level = clamp(truncateToInt8(fround(fround(value * (this.scales[at] as number)) + (nmax + 0.5))), 0, 2 * nmax - 1);
        }
        writeLegacyLevel(bytes, y, this.type, e, level);
        return fround((level - nmax) * d);
      }
    }
  }
}

const legacyWeights = new Float32Array(32);
const legacyLevels = new Int8Array(32);

/** `get_scale_min_k4`: the 6-bit scale of sub-block j (0…7) from the 12-byte packed `scales`. */
function scaleK4(bytes: Uint8Array, at: number, j: number): number {
  return j < 4 ? (bytes[at + j] as number) & 63 : ((bytes[at + j + 4] as number) & 0x0f) | (((bytes[at + j - 4] as number) >>> 6) << 4);
}

/** `get_scale_min_k4`: the 6-bit min of sub-block j. */
function minK4(bytes: Uint8Array, at: number, j: number): number {
  return j < 4 ? (bytes[at + j + 4] as number) & 63 : ((bytes[at + j + 4] as number) >>> 4) | (((bytes[at + j] as number) >>> 6) << 4);
}

/**
 * Element e (0…255) of a Q4_K/Q5_K super-block at y: low 4 bits in the nibble (e >> 5 & 1) of
 * qs[32·(e >> 6) + (e & 31)]; Q5_K's fifth bit is bit 2·(e >> 6) + (e >> 5 & 1) of qh[e & 31].
 */
function writeK4Level(bytes: Uint8Array, y: number, type: 'Q4_K' | 'Q5_K', e: number, level: number): void {
  const half = (e >>> 5) & 1;
  const chunk = e >>> 6;
  const qs = y + (type === 'Q4_K' ? 16 : 48) + 32 * chunk + (e & 31);
  const shift = 4 * half;
  bytes[qs] = ((bytes[qs] as number) & ~(0x0f << shift)) | ((level & 0x0f) << shift);
  if (type === 'Q5_K') {
    const qh = y + 16 + (e & 31);
    const bit = 1 << (2 * chunk + half);
    bytes[qh] = level & 0x10 ? (bytes[qh] as number) | bit : (bytes[qh] as number) & ~bit;
  }
}

function readK4Level(bytes: Uint8Array, y: number, type: 'Q4_K' | 'Q5_K', e: number): number {
  const half = (e >>> 5) & 1;
  const chunk = e >>> 6;
  const low = ((bytes[y + (type === 'Q4_K' ? 16 : 48) + 32 * chunk + (e & 31)] as number) >>> (4 * half)) & 0x0f;
  if (type === 'Q4_K') return low;
  return low | ((((bytes[y + 16 + (e & 31)] as number) >>> (2 * chunk + half)) & 1) << 4);
}

/**
 * Element e of a Q6_K block at y (level 0…63): its low 4 bits in ql[64·(e >> 7) + (e & 31) + 32·(quarter & 1)],
 * high nibble for quarters 2 and 3 (quarter = e >> 5 & 3); its top 2 bits at bit 2·quarter of
 * qh[128 + 32·(e >> 7) + (e & 31)].
 */
function writeQ6Level(bytes: Uint8Array, y: number, e: number, level: number): void {
  const half = e >>> 7;
  const quarter = (e >>> 5) & 3;
  const l = e & 31;
  const ql = y + 64 * half + l + (quarter & 1 ? 32 : 0);
  const nibbleShift = quarter >= 2 ? 4 : 0;
  bytes[ql] = ((bytes[ql] as number) & ~(0x0f << nibbleShift)) | ((level & 0x0f) << nibbleShift);
  const qh = y + 128 + 32 * half + l;
  const highShift = 2 * quarter;
  bytes[qh] = ((bytes[qh] as number) & ~(3 << highShift)) | (((level >>> 4) & 3) << highShift);
}

function readQ6Level(bytes: Uint8Array, y: number, e: number): number {
  const half = e >>> 7;
  const quarter = (e >>> 5) & 3;
  const l = e & 31;
  const low = ((bytes[y + 64 * half + l + (quarter & 1 ? 32 : 0)] as number) >>> (quarter >= 2 ? 4 : 0)) & 0x0f;
  const high = ((bytes[y + 128 + 32 * half + l] as number) >>> (2 * quarter)) & 3;
  return low | (high << 4);
}

/** Element j (0…31) of a Q4_0 block (nibbles at @2) or Q5_0 block (qh u32 @2, nibbles @6). */
function writeLegacyLevel(bytes: Uint8Array, y: number, type: 'Q4_0' | 'Q5_0', j: number, level: number): void {
  const qs = y + (type === 'Q4_0' ? 2 : 6) + (j & 15);
  const shift = j < 16 ? 0 : 4;
  bytes[qs] = ((bytes[qs] as number) & ~(0x0f << shift)) | ((level & 0x0f) << shift);
  if (type === 'Q5_0') {
    const qh = y + 2 + (j >>> 3);
    const bit = 1 << (j & 7);
    bytes[qh] = level & 0x10 ? (bytes[qh] as number) | bit : (bytes[qh] as number) & ~bit;
  }
}

function readLegacyLevel(bytes: Uint8Array, y: number, type: 'Q4_0' | 'Q5_0', j: number): number {
  const low = ((bytes[y + (type === 'Q4_0' ? 2 : 6) + (j & 15)] as number) >>> (j < 16 ? 0 : 4)) & 0x0f;
  if (type === 'Q4_0') return low;
  return low | ((((bytes[y + 2 + (j >>> 3)] as number) >>> (j & 7)) & 1) << 4);
}

/**
 * GPTQ on a chunk of whole rows of a ggml type: the rows' bytes, as `quantizeRows` would lay them out. With
 * no importance weights given, the factor's diagonal (the calibration's mean squares) serves, as the
 * imatrix computed from the same text would. `rows` is not modified.
 */
export function gptqQuantizeGgmlRows(type: GptqGgmlType, rows: Float32Array, columns: number, factor: GptqFactor, options: GgmlGptqOptions = {}): Uint8Array {
  if (factor.columns !== columns) {
    throw new PolyquantError(ERROR_CODES.CONFIG, `the calibration Hessian has ${factor.columns} columns but the rows have ${columns}`, {
      tensor: options.tensor,
      hint: 'the Hessian must come from the same model as the weights',
    });
  }
  if (rows.length % columns !== 0) throw new PolyquantError(ERROR_CODES.USAGE, `${rows.length} values are not whole rows of ${columns}`, { tensor: options.tensor });
  const rowCount = rows.length / columns;
  const importance = options.importance === undefined ? Float32Array.from(factor.importance) : options.importance;
  const quantizer = new GgmlGptqQuantizer(type, columns, rowCount, 0, rows, { ...options, importance });
  gptqQuantizeRows(rows, rowCount, 0, factor, quantizer);
  return quantizer.bytes;
}

