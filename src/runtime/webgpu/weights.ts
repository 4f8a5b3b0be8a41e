/// <reference types="@webgpu/types" />
/**
 * Weights on the GPU: each tensor-cache record in its own GPUBuffer (as tvmjs uploads them), matrices kept
 * in their stored layout (f16 halves, q4/q8 words and scales) and dequantized by the kernels, vectors
 * (LayerNorm weights, biases) widened to float32 at load.
 *
 * Binding windows (specs/webgpu.md §4.4): a matrix whose bytes pass the binding limit (the device's
 * maxStorageBufferBindingSize, or a lower `maxBindingBytes`) is bound as row windows. A window starts at a
 * row whose byte offset is a multiple of minStorageBufferOffsetAlignment in the weight and, for grouped
 * layouts, in the scales too (so its first row is a multiple of the "granule" lcm(align/gcd(align,
 * rowBytes)) of both), and holds as many granules as fit the limit. Kernels index rows relative to their
 * window and write output columns from the window's first row; the embedding gather runs once per window
 * and keeps the tokens that fall in it. The file keeps one record per tensor (MLC-compatible).
 *
 * Loading streams the folder shard by shard: one shard's bytes in memory at a time, its sha256 (WebCrypto)
 * checked against the manifest before any of its records is used, every record written to its buffer, the
 * shard dropped. Errors are PolyquantErrors naming the shard, the record, the value and the limit.
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { f16ToF32Array } from '../../tensor/float.js';
import { expandBf16, type TensorCacheManifest, type TensorCacheRecord, tensorCacheRecordBytes } from '../../converters/webgpu/manifest.js';
import type { Binding, GpuContext } from './gpu.js';
import { type ScaleFormat, type WeightFormat, wordsPerRow } from './kernels.js';
import type { WeightSource } from './source.js';

export interface WeightWindow {
  readonly rowStart: number;
  readonly rowCount: number;
  readonly weight: Binding;
  readonly scales: Binding | undefined;
}

/** A `[N, K]` matrix (nn.Linear weight or embedding) on the GPU in its stored layout. */
export interface WeightMatrix {
  readonly name: string;
  readonly format: WeightFormat;
  readonly scale: ScaleFormat | undefined;
  readonly N: number;
  readonly K: number;
  /** Scale groups per row (q4/q8), else 0. */
  readonly groups: number;
  /** u32 words per row (q4/q8), else 0. */
  readonly wordsPerRow: number;
  readonly weight: GPUBuffer;
  readonly scales: GPUBuffer | undefined;
  readonly windows: readonly WeightWindow[];
}

export interface MatrixSpec {
  readonly name: string;
  readonly format: WeightFormat;
  readonly scale?: ScaleFormat | undefined;
  readonly N: number;
  readonly K: number;
}

/** Bytes of one stored row of the weight and of the scales. */
export function rowBytes(spec: MatrixSpec): { weight: number; scales: number } {
  switch (spec.format) {
    case 'f32':
      return { weight: spec.K * 4, scales: 0 };
    case 'f16':
      return { weight: spec.K * 2, scales: 0 };
    case 'q4':
    case 'q8':
      return { weight: wordsPerRow(spec.format, spec.K) * 4, scales: Math.ceil(spec.K / 32) * (spec.scale === 'f32' ? 4 : 2) };
  }
}

function gcd(a: number, b: number): number {
  let x = a;
  let y = b;
  while (y !== 0) [x, y] = [y, x % y];
  return x;
}

export interface PlannedWindow {
  readonly rowStart: number;
  readonly rowCount: number;
  readonly weightOffset: number;
  readonly weightSize: number;
  readonly scaleOffset: number;
  readonly scaleSize: number;
}

/** Row windows of a matrix for a binding limit and offset alignment (see the module comment). */
export function planWindows(spec: MatrixSpec, maxBindingBytes: number, alignment: number): PlannedWindow[] {
  const bytes = rowBytes(spec);
  const grouped = spec.format === 'q4' || spec.format === 'q8';
  const totalWeight = spec.N * bytes.weight;
  const totalScales = spec.N * bytes.scales;
  const round4 = (value: number) => Math.ceil(value / 4) * 4;
  if (round4(totalWeight) <= maxBindingBytes && (!grouped || round4(totalScales) <= maxBindingBytes)) {
    return [{ rowStart: 0, rowCount: spec.N, weightOffset: 0, weightSize: round4(totalWeight), scaleOffset: 0, scaleSize: grouped ? round4(totalScales) : 0 }];
  }
  const granuleOf = (rowSize: number) => alignment / gcd(alignment, rowSize);
  const weightGranule = granuleOf(bytes.weight);
  const granule = grouped ? (weightGranule * granuleOf(bytes.scales)) / gcd(weightGranule, granuleOf(bytes.scales)) : weightGranule;
  const rowsFit = Math.floor(Math.min(maxBindingBytes / bytes.weight, grouped ? maxBindingBytes / bytes.scales : Number.POSITIVE_INFINITY));
  const rowsPerWindow = Math.floor(rowsFit / granule) * granule;
  if (rowsPerWindow < 1) {
    throw new PolyquantError(
      ERROR_CODES.UNSUPPORTED,
      `a binding window of this ${spec.N}×${spec.K} ${spec.format} matrix needs ${granule} rows (${granule * bytes.weight} bytes) to start on a ${alignment}-byte boundary, more than the binding limit ${maxBindingBytes}`,
      { tensor: spec.name, hint: 'the adapter cannot bind this tensor; use an adapter with a larger maxStorageBufferBindingSize' },
    );
  }
  const windows: PlannedWindow[] = [];
  for (let rowStart = 0; rowStart < spec.N; rowStart += rowsPerWindow) {
    const rowCount = Math.min(rowsPerWindow, spec.N - rowStart);
    windows.push({
      rowStart,
      rowCount,
      weightOffset: rowStart * bytes.weight,
      weightSize: round4(rowCount * bytes.weight),
      scaleOffset: rowStart * bytes.scales,
      scaleSize: grouped ? round4(rowCount * bytes.scales) : 0,
    });
  }
  return windows;
}

/** Creates a matrix's buffers (contents written later by writeMatrix) and its windows. */
export function allocateMatrix(context: GpuContext, spec: MatrixSpec): WeightMatrix {
  const bytes = rowBytes(spec);
  const grouped = spec.format === 'q4' || spec.format === 'q8';
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
  const tooLarge = (size: number, part: string): never => {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the ${part} needs ${size} bytes, more than this device's maxBufferSize ${context.maxBufferSize}`, {
      tensor: spec.name,
      hint: 'the adapter cannot hold this tensor in one buffer; use an adapter with a larger maxBufferSize',
    });
  };
  if (spec.N * bytes.weight > context.maxBufferSize) tooLarge(spec.N * bytes.weight, 'weight');
  if (spec.N * bytes.scales > context.maxBufferSize) tooLarge(spec.N * bytes.scales, 'scales');
  const planned = planWindows(spec, context.maxBindingBytes, context.storageAlignment);
  const weight = context.createBuffer(spec.N * bytes.weight, usage, spec.name);
  const scales = grouped ? context.createBuffer(spec.N * bytes.scales, usage, `${spec.name} scales`) : undefined;
  const single = planned.length === 1;
  return {
    name: spec.name,
    format: spec.format,
    scale: grouped ? (spec.scale ?? 'f16') : undefined,
    N: spec.N,
    K: spec.K,
    groups: grouped ? Math.ceil(spec.K / 32) : 0,
    wordsPerRow: grouped ? wordsPerRow(spec.format as 'q4' | 'q8', spec.K) : 0,
    weight,
    scales,
    windows: planned.map((window) => ({
      rowStart: window.rowStart,
      rowCount: window.rowCount,
      weight: single ? weight : { buffer: weight, offset: window.weightOffset, size: window.weightSize },
      scales: scales === undefined ? undefined : single ? scales : { buffer: scales, offset: window.scaleOffset, size: window.scaleSize },
    })),
  };
}

/** Writes bytes to a buffer from offset 0, padding the tail to whole words (writeBuffer's rule). */
export function writePadded(device: GPUDevice, buffer: GPUBuffer, data: Uint8Array | Float32Array | Uint32Array | Uint16Array): void {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (bytes.length % 4 === 0) {
    device.queue.writeBuffer(buffer, 0, bytes.buffer, bytes.byteOffset, bytes.length);
    return;
  }
  const padded = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
  padded.set(bytes);
  device.queue.writeBuffer(buffer, 0, padded.buffer, 0, padded.length);
}

/** A matrix from CPU arrays in its stored layout (tests, and the loader through writeRecord). */
export function createMatrix(context: GpuContext, spec: MatrixSpec, weight: Uint8Array | Float32Array | Uint32Array | Uint16Array, scales?: Uint16Array | Float32Array): WeightMatrix {
  const matrix = allocateMatrix(context, spec);
  writePadded(context.device, matrix.weight, weight);
  if (matrix.scales !== undefined) {
    if (scales === undefined) throw new Error(`internal: ${spec.name} needs scales`);
    writePadded(context.device, matrix.scales, scales);
  }
  return matrix;
}

export function destroyMatrix(matrix: WeightMatrix): void {
  matrix.weight.destroy();
  matrix.scales?.destroy();
}

// ============================================================================================= loading

/** What the model needs of one record: a matrix part in its stored layout, or a vector widened to f32. */
export type RecordUse =
  | { readonly kind: 'matrix-weight'; readonly matrix: WeightMatrix }
  | { readonly kind: 'matrix-scales'; readonly matrix: WeightMatrix }
  | { readonly kind: 'vector'; readonly buffer: GPUBuffer; readonly length: number };

export interface LoadProgress {
  /** Shards done so far, of `shards`. */
  readonly shard: number;
  readonly shards: number;
  /** Shard bytes read so far, of `totalBytes`. */
  readonly bytes: number;
  readonly totalBytes: number;
  /** The shard just finished. */
  readonly file: string;
}

export interface StreamOptions {
  /** Check each shard's sha256 where the manifest has one (default true). */
  readonly verifyHashes?: boolean;
  readonly onProgress?: ((progress: LoadProgress) => void) | undefined;
}

export interface StreamResult {
  /** Shards whose sha256 was checked, and those the manifest gives none for (plain MLC folders carry md5 only). */
  readonly verifiedShards: number;
  readonly unverifiedShards: number;
  readonly bytes: number;
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const subtle = (globalThis as { crypto?: { subtle?: { digest(algorithm: string, data: Uint8Array): Promise<ArrayBuffer> } } }).crypto?.subtle;
  if (subtle === undefined) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'WebCrypto (crypto.subtle) is not available here, so shard hashes cannot be checked', {
      hint: 'browsers offer it in secure contexts only (https or localhost); or load with verifyHashes false',
    });
  }
  const digest = new Uint8Array(await subtle.digest('SHA-256', bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/** Float32 values of a float record (float16, bfloat16, float32 raw or f32-to-bf16). */
export function recordFloats(record: TensorCacheRecord, bytes: Uint8Array): Float32Array {
  if (record.bf16Encoded || record.dtype === 'bfloat16') return expandBf16(bytes);
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  if (record.dtype === 'float32') return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.length / 4);
  if (record.dtype === 'float16') {
    const halves = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
    return f16ToF32Array(new Uint16Array(halves.buffer, halves.byteOffset, halves.length / 2));
  }
  throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `dtype ${record.dtype} is not a float dtype the runtime reads here`, { file: record.dataPath, tensor: record.name });
}

function writeRecord(device: GPUDevice, record: TensorCacheRecord, bytes: Uint8Array, use: RecordUse): void {
  switch (use.kind) {
    case 'vector':
      writePadded(device, use.buffer, recordFloats(record, bytes));
      return;
    case 'matrix-weight':
      // f32 matrices stored as bf16 are widened; every other layout is uploaded as stored.
      writePadded(device, use.matrix.weight, use.matrix.format === 'f32' ? recordFloats(record, bytes) : bytes);
      return;
    case 'matrix-scales':
      writePadded(device, use.matrix.scales as GPUBuffer, use.matrix.scale === 'f32' ? recordFloats(record, bytes) : bytes);
      return;
  }
}

/**
 * Reads every shard holding a record of `uses` (in manifest order, one at a time), checks its size and
 * sha256, and writes those records to their buffers. Records of `uses` must all be in the manifest.
 */
export async function streamShards(
  device: GPUDevice,
  source: WeightSource,
  manifest: TensorCacheManifest,
  uses: ReadonlyMap<string, RecordUse>,
  options: StreamOptions = {},
): Promise<StreamResult> {
  const verify = options.verifyHashes ?? true;
  const needed = manifest.shards.filter((shard) => shard.records.some((record) => uses.has(record.name)));
  const totalBytes = needed.reduce((sum, shard) => sum + shard.nbytes, 0);
  const describe = (name: string) => source.describe?.(name) ?? name;
  let bytesDone = 0;
  let verifiedShards = 0;
  let unverifiedShards = 0;
  for (const [index, shard] of needed.entries()) {
    const file = describe(shard.dataPath);
    let bytes: Uint8Array;
    try {
      bytes = await source.readBytes(shard.dataPath);
    } catch (error) {
      if (error instanceof PolyquantError) {
        if (error.code === ERROR_CODES.NOT_FOUND) {
          throw new PolyquantError(ERROR_CODES.NOT_FOUND, `shard ${shard.dataPath} (${shard.records.length} records, ${shard.nbytes} bytes) is missing`, {
            file,
            hint: 'the folder is incomplete; convert it again or copy every params_shard_N.bin the manifest lists',
            cause: error,
          });
        }
        throw error;
      }
      throw new PolyquantError(ERROR_CODES.IO, `reading shard ${shard.dataPath} failed: ${error instanceof Error ? error.message : String(error)}`, { file, cause: error });
    }
    if (bytes.length !== shard.nbytes) {
      throw new PolyquantError(ERROR_CODES.MALFORMED, `shard ${shard.dataPath} has ${bytes.length} bytes; the manifest says ${shard.nbytes}`, {
        file,
        hint: 'the shard is truncated or was replaced; fetch or convert it again',
      });
    }
    if (verify && shard.sha256 !== undefined) {
      const actual = await sha256Hex(bytes);
      if (actual !== shard.sha256) {
        throw new PolyquantError(ERROR_CODES.MALFORMED, `shard ${shard.dataPath} has sha256 ${actual}; the manifest says ${shard.sha256}`, {
          file,
          hint: 'the shard is corrupt or does not belong to this manifest; fetch or convert it again',
        });
      }
      verifiedShards += 1;
    } else {
      unverifiedShards += 1;
    }
    for (const record of shard.records) {
      const use = uses.get(record.name);
      if (use !== undefined) writeRecord(device, record, tensorCacheRecordBytes(bytes, record), use);
    }
    bytesDone += shard.nbytes;
    options.onProgress?.({ shard: index + 1, shards: needed.length, bytes: bytesDone, totalBytes, file: shard.dataPath });
  }
  return { verifiedShards, unverifiedShards, bytes: bytesDone };
}
