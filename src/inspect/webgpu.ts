/**
 * `polyquant inspect` for WebGPU folders (MLC tensor cache: tensor-cache.json + params_shard_N.bin +
 * mlc-chat-config.json; JSON schema `polyquant.inspect-webgpu/2`): the quantization and model config from
 * mlc-chat-config.json, the shards (count, bytes, whether each sha256 / md5sum matches), the records by
 * dtype and format, parameters and bits per weight, and warnings. The folder goes through the validating
 * reader (converters/webgpu/read.ts) first; hashes are checked and reported rather than thrown, so a
 * damaged folder is described, with the damage named.
 */
import { join, relative } from 'node:path';
import { type HashStatus, readWebGpuFolder, type WebGpuShardStatus } from '../converters/webgpu/read.js';
import type { TensorCacheRecord } from '../converters/webgpu/manifest.js';
import { pathExists } from '../io/file.js';
import { isWebGpuLayoutName, WEBGPU_LAYOUTS, type WebGpuLayoutName } from '../quant/webgpu-layouts.js';

export const INSPECT_WEBGPU_SCHEMA = 'polyquant.inspect-webgpu/2';

export interface WebGpuRecordGroup {
  readonly dtype: string;
  readonly format: string;
  readonly records: number;
  readonly elements: number;
  /** On disk. */
  readonly bytes: number;
}

export interface WebGpuInspectTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: string;
  readonly format: string;
  readonly nbytes: number;
  readonly dataPath: string;
  readonly byteOffset: number;
}

export interface WebGpuInspectReport {
  readonly schema: typeof INSPECT_WEBGPU_SCHEMA;
  readonly path: string;
  readonly kind: 'webgpu-folder';
  /** The manifest read, relative to the folder. */
  readonly manifest: string;
  readonly legacyManifest: 'identical' | 'different' | 'absent' | 'only';
  readonly b16Manifest: boolean;
  /** mlc-chat-config.json's `quantization`, and whether polyquant knows the layout. */
  readonly quantization: string | null;
  readonly knownLayout: boolean;
  readonly modelType: string | null;
  /** mlc-chat-config.json's `model_config`, as written. */
  readonly modelConfig: Readonly<Record<string, unknown>> | null;
  readonly tokenizerFiles: readonly { readonly name: string; readonly exists: boolean }[];
  /** The manifest's metadata (ParamSize, ParamBytes, BitsPerParam for MLC-written folders). */
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly shards: {
    readonly count: number;
    readonly bytes: number;
    readonly largest: number;
    readonly sha256: Readonly<Record<HashStatus, number>>;
    readonly md5: Readonly<Record<HashStatus, number>>;
    readonly files: readonly Omit<WebGpuShardStatus, 'path'>[];
  };
  readonly records: number;
  readonly byDtype: readonly WebGpuRecordGroup[];
  /**
   * Model parameters the records store (a quantized pair counts the weight's N × K, K from its words and the
   * layout's elements per word); null when the layout is unknown and the folder holds quantized pairs.
   */
  readonly parameters: number | null;
  /** Bytes in memory (float32 counted as 4 even when stored as bf16), as MLC's ParamBytes. */
  readonly memoryBytes: number;
  readonly diskBytes: number;
  readonly bitsPerWeight: number | null;
  readonly tensors: readonly WebGpuInspectTensor[];
  readonly warnings: readonly string[];
}

export interface WebGpuInspectOptions {
  /** Called as shard bytes are hashed. */
  readonly onProgress?: ((done: number, total: number) => void) | undefined;
}

function countStatuses(shards: readonly WebGpuShardStatus[], key: 'sha256' | 'md5'): Record<HashStatus, number> {
  const counts: Record<HashStatus, number> = { ok: 0, mismatch: 0, absent: 0, 'not-checked': 0 };
  for (const shard of shards) counts[shard[key]] += 1;
  return counts;
}

function memoryBytes(record: TensorCacheRecord): number {
  return record.bf16Encoded ? record.nbytes * 2 : record.nbytes;
}

/** Parameters stored: each quantized pair once (N × K), every other record by its shape. */
function countParameters(records: readonly TensorCacheRecord[], layout: WebGpuLayoutName | null, warnings: string[]): number | null {
  const names = new Set(records.map((record) => record.name));
  let parameters = 0;
  for (const record of records) {
    if (record.name.endsWith('.q_scale') && names.has(`${record.name.slice(0, -'.q_scale'.length)}.q_weight`)) continue;
    if (record.name.endsWith('.q_weight') && names.has(`${record.name.slice(0, -'.q_weight'.length)}.q_scale`)) {
      if (layout === null || WEBGPU_LAYOUTS[layout].kind !== 'group-quant' || record.shape.length !== 2) {
        warnings.push(`${record.name}: a quantized pair in a layout polyquant does not know; parameters and bits per weight are not counted`);
        return null;
      }
      const [N, words] = record.shape as [number, number];
      parameters += N * words * WEBGPU_LAYOUTS[layout].elementsPerWord;
      continue;
    }
    parameters += record.elements;
  }
  return parameters;
}

export async function inspectWebGpuFolder(path: string, options: WebGpuInspectOptions = {}): Promise<WebGpuInspectReport> {
  const folder = await readWebGpuFolder(path, { hashes: 'report', onProgress: options.onProgress });
  const warnings = [...folder.warnings];
  const { manifest, chatConfig } = folder;
  const quantization = typeof chatConfig?.['quantization'] === 'string' ? (chatConfig['quantization'] as string) : null;
  const layout = quantization !== null && isWebGpuLayoutName(quantization) ? quantization : null;
  if (quantization !== null && layout === null) warnings.push(`quantization ${JSON.stringify(quantization)} is not a layout polyquant writes`);
  const modelConfig = chatConfig !== null && typeof chatConfig['model_config'] === 'object' && chatConfig['model_config'] !== null && !Array.isArray(chatConfig['model_config'])
    ? (chatConfig['model_config'] as Record<string, unknown>)
    : null;
  const listed = Array.isArray(chatConfig?.['tokenizer_files']) ? (chatConfig['tokenizer_files'] as unknown[]).filter((name): name is string => typeof name === 'string') : [];
  const tokenizerFiles: { name: string; exists: boolean }[] = [];
  for (const name of listed) {
    const exists = !name.includes('/') && !name.includes('\\') && (await pathExists(join(folder.dir, name)));
    tokenizerFiles.push({ name, exists });
    if (!exists) warnings.push(`mlc-chat-config.json lists tokenizer file ${name}, which the folder does not have`);
  }

  const groups = new Map<string, WebGpuRecordGroup>();
  for (const record of manifest.records) {
    const key = `${record.dtype} ${record.format}`;
    const group = groups.get(key) ?? { dtype: record.dtype, format: record.format, records: 0, elements: 0, bytes: 0 };
    groups.set(key, { ...group, records: group.records + 1, elements: group.elements + record.elements, bytes: group.bytes + record.nbytes });
  }
  const parameters = countParameters(manifest.records, layout, warnings);
  const memory = manifest.records.reduce((sum, record) => sum + memoryBytes(record), 0);
  const sha256 = countStatuses(folder.shards, 'sha256');
  const md5 = countStatuses(folder.shards, 'md5');
  return {
    schema: INSPECT_WEBGPU_SCHEMA,
    path: folder.dir,
    kind: 'webgpu-folder',
    manifest: relative(folder.dir, folder.manifestFile),
    legacyManifest: folder.legacyManifest,
    b16Manifest: folder.b16Manifest,
    quantization,
    knownLayout: layout !== null,
    modelType: typeof chatConfig?.['model_type'] === 'string' ? (chatConfig['model_type'] as string) : null,
    modelConfig,
    tokenizerFiles,
    metadata: manifest.metadata,
    shards: {
      count: manifest.shards.length,
      bytes: manifest.shards.reduce((sum, shard) => sum + shard.nbytes, 0),
      largest: manifest.shards.reduce((largest, shard) => Math.max(largest, shard.nbytes), 0),
      sha256,
      md5,
      files: folder.shards.map(({ path: _path, ...rest }) => rest),
    },
    records: manifest.records.length,
    byDtype: [...groups.values()],
    parameters,
    memoryBytes: memory,
    diskBytes: manifest.records.reduce((sum, record) => sum + record.nbytes, 0),
    bitsPerWeight: parameters === null || parameters === 0 ? null : (memory * 8) / parameters,
    tensors: manifest.records.map((record) => ({
      name: record.name,
      shape: record.shape,
      dtype: record.dtype,
      format: record.format,
      nbytes: record.nbytes,
      dataPath: record.dataPath,
      byteOffset: record.byteOffset,
    })),
    warnings,
  };
}
