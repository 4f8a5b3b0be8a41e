/**
 * A validating reader of WebGPU (MLC tensor cache) folders, for `inspect`, tests and the webgpu engine: the
 * Node layer over manifest.ts (which parses the JSON the same way in the browser). It reads
 * `tensor-cache.json` (or, for folders written for older WebLLM builds, `ndarray-cache.json`) under a size
 * limit, validates it (manifest.ts), then checks each shard the manifest names: it exists beside the
 * manifest, is a regular file, and has exactly the stated `nbytes` (shorter is a truncated download,
 * longer a stale file); with `hashes: 'verify'` each shard's sha256 (and MLC's md5sum) must match, with
 * `'report'` mismatches are returned as data. Every failure is a PolyquantError naming the file, the shard
 * or record, and the value.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { fileKind, ioError, pathExists, readWholeFile, withFile } from '../../io/file.js';
import { isRecord, readJsonFile } from '../../readers/json-file.js';
import { MLC_CHAT_CONFIG_FILE } from './format.js';
import {
  LEGACY_TENSOR_CACHE_FILE,
  parseTensorCacheJson,
  TENSOR_CACHE_B16_FILE,
  TENSOR_CACHE_FILE,
  type TensorCacheManifest,
  type TensorCacheShard,
} from './manifest.js';

/** Largest manifest read: 3.8b's q4f16_1 manifest is ~150 KB; 64 MiB leaves room for any model and bounds a hostile file. */
export const MAX_TENSOR_CACHE_JSON_BYTES = 64 * 1024 * 1024;

/** A shard's hash as checked: matches, does not, is not in the manifest, or was not computed. */
export type HashStatus = 'ok' | 'mismatch' | 'absent' | 'not-checked';

export interface WebGpuShardStatus {
  readonly dataPath: string;
  readonly path: string;
  readonly nbytes: number;
  readonly records: number;
  readonly sha256: HashStatus;
  readonly md5: HashStatus;
}

export interface WebGpuFolder {
  readonly dir: string;
  /** The manifest read: tensor-cache.json, or ndarray-cache.json when only that one exists. */
  readonly manifestFile: string;
  readonly manifest: TensorCacheManifest;
  readonly shards: readonly WebGpuShardStatus[];
  /** ndarray-cache.json beside tensor-cache.json: the same bytes, other bytes, or none. */
  readonly legacyManifest: 'identical' | 'different' | 'absent' | 'only';
  readonly b16Manifest: boolean;
  /** mlc-chat-config.json as parsed, or null when the folder has none. */
  readonly chatConfig: Readonly<Record<string, unknown>> | null;
  readonly warnings: readonly string[];
}

export interface ReadWebGpuFolderOptions {
  /** `verify`: a mismatching hash is an error; `report`: returned per shard; `skip` (default): not computed. */
  readonly hashes?: 'verify' | 'report' | 'skip';
  /** Bytes hashed so far, of all shards. */
  readonly onProgress?: ((done: number, total: number) => void) | undefined;
}

/** Whether `dir` looks like a WebGPU folder (it has a tensor cache manifest). */
export async function isWebGpuFolder(dir: string): Promise<boolean> {
  return (await pathExists(join(dir, TENSOR_CACHE_FILE))) || (await pathExists(join(dir, LEGACY_TENSOR_CACHE_FILE)));
}

export async function readWebGpuFolder(path: string, options: ReadWebGpuFolderOptions = {}): Promise<WebGpuFolder> {
  const dir = resolve(path);
  const warnings: string[] = [];
  const current = join(dir, TENSOR_CACHE_FILE);
  const legacy = join(dir, LEGACY_TENSOR_CACHE_FILE);
  const hasCurrent = await pathExists(current);
  const hasLegacy = await pathExists(legacy);
  if (!hasCurrent && !hasLegacy) {
    throw new PolyquantError(ERROR_CODES.NOT_FOUND, `no ${TENSOR_CACHE_FILE} (or ${LEGACY_TENSOR_CACHE_FILE}) in the folder`, {
      file: dir,
      hint: 'a WebGPU folder is what convert --to webgpu writes',
    });
  }
  const manifestFile = hasCurrent ? current : legacy;
  const bytes = await readWholeFile(manifestFile, 'the tensor cache manifest', MAX_TENSOR_CACHE_JSON_BYTES);
  const manifest = parseTensorCacheJson(bytes, manifestFile);
  warnings.push(...manifest.warnings);
  let legacyManifest: WebGpuFolder['legacyManifest'] = 'only';
  if (hasCurrent) {
    if (!hasLegacy) {
      legacyManifest = 'absent';
      warnings.push(`no ${LEGACY_TENSOR_CACHE_FILE}: WebLLM builds before the Sept 2025 rename will not find the weights`);
    } else {
      const twin = await readWholeFile(legacy, 'the legacy tensor cache manifest', MAX_TENSOR_CACHE_JSON_BYTES);
      legacyManifest = Buffer.from(twin).equals(Buffer.from(bytes)) ? 'identical' : 'different';
      if (legacyManifest === 'different') warnings.push(`${LEGACY_TENSOR_CACHE_FILE} differs from ${TENSOR_CACHE_FILE}: old and new WebLLM builds would load different weights`);
    }
  } else {
    warnings.push(`only ${LEGACY_TENSOR_CACHE_FILE}: current MLC runtimes open ${TENSOR_CACHE_FILE} only`);
  }

  const shards: WebGpuShardStatus[] = [];
  for (const shard of manifest.shards) shards.push(await checkShardFile(dir, manifestFile, shard));
  const mode = options.hashes ?? 'skip';
  if (mode !== 'skip') {
    const total = manifest.shards.reduce((sum, shard) => sum + shard.nbytes, 0);
    let done = 0;
    for (const [index, shard] of manifest.shards.entries()) {
      const status = await hashStatus(join(dir, shard.dataPath), shard, (bytes) => {
        done += bytes;
        options.onProgress?.(done, total);
      });
      if (mode === 'verify') {
        for (const [kind, result, stated] of [['sha256', status.sha256, shard.sha256], ['md5sum', status.md5, shard.md5sum]] as const) {
          if (result === 'mismatch') {
            throw new PolyquantError(ERROR_CODES.MALFORMED, `the shard's ${kind} does not match ${stated} in the manifest`, {
              file: join(dir, shard.dataPath),
              hint: `the shard was changed or damaged after ${manifestFile} was written; convert again or fetch it again`,
            });
          }
        }
      }
      shards[index] = { ...(shards[index] as WebGpuShardStatus), ...status };
      if (status.sha256 === 'mismatch' || status.md5 === 'mismatch') warnings.push(`${shard.dataPath}: ${status.sha256 === 'mismatch' ? 'sha256' : 'md5sum'} does not match the manifest`);
    }
  }
  if (manifest.shards.length > 0 && manifest.shards.every((shard) => shard.sha256 === undefined)) {
    warnings.push('the manifest has no sha256 per shard: shards cannot be checked beyond their size (and md5sum)');
  }
  return {
    dir,
    manifestFile,
    manifest,
    shards,
    legacyManifest,
    b16Manifest: await pathExists(join(dir, TENSOR_CACHE_B16_FILE)),
    chatConfig: await readChatConfig(dir, warnings),
    warnings,
  };
}

async function checkShardFile(dir: string, manifestFile: string, shard: TensorCacheShard): Promise<WebGpuShardStatus> {
  const path = join(dir, shard.dataPath);
  const info = await stat(path).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new PolyquantError(ERROR_CODES.NOT_FOUND, `the manifest names shard ${shard.dataPath} (${shard.records.length} records, ${shard.nbytes} bytes), which does not exist`, {
        file: path,
        hint: `${manifestFile} and its shards must stay together; convert again or fetch the missing shard`,
      });
    }
    throw ioError(path, 'stat the shard', error);
  });
  if (!info.isFile()) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, `the shard is a ${fileKind(info)}, not a regular file`, { file: path });
  }
  if (info.size !== shard.nbytes) {
    const what = info.size < shard.nbytes ? 'it is truncated' : 'it has trailing bytes';
    throw new PolyquantError(ERROR_CODES.MALFORMED, `the shard has ${info.size} bytes but the manifest says ${shard.nbytes}: ${what}`, {
      file: path,
      tensor: shard.records.find((record) => record.byteOffset + record.nbytes > info.size)?.name,
      hint: 'convert again or fetch the shard again',
    });
  }
  return { dataPath: shard.dataPath, path, nbytes: shard.nbytes, records: shard.records.length, sha256: shard.sha256 === undefined ? 'absent' : 'not-checked', md5: shard.md5sum === undefined ? 'absent' : 'not-checked' };
}

async function hashStatus(path: string, shard: TensorCacheShard, progress: (bytes: number) => void): Promise<Pick<WebGpuShardStatus, 'sha256' | 'md5'>> {
  const sha256 = createHash('sha256');
  const md5 = createHash('md5');
  await withFile(path, async (file) => {
    const piece = 4 << 20;
    for (let offset = 0; offset < file.size; offset += piece) {
      const bytes = await file.read(offset, Math.min(piece, file.size - offset));
      sha256.update(bytes);
      md5.update(bytes);
      progress(bytes.length);
    }
  });
  const compare = (stated: string | undefined, actual: string): HashStatus => (stated === undefined ? 'absent' : stated === actual ? 'ok' : 'mismatch');
  return { sha256: compare(shard.sha256, sha256.digest('hex')), md5: compare(shard.md5sum, md5.digest('hex')) };
}

async function readChatConfig(dir: string, warnings: string[]): Promise<Record<string, unknown> | null> {
  const path = join(dir, MLC_CHAT_CONFIG_FILE);
  if (!(await pathExists(path))) {
    warnings.push(`no ${MLC_CHAT_CONFIG_FILE}: WebLLM needs it to load the model`);
    return null;
  }
  const value = await readJsonFile(path);
  if (!isRecord(value)) throw new PolyquantError(ERROR_CODES.MALFORMED, `${MLC_CHAT_CONFIG_FILE} is not a JSON object`, { file: path });
  return value;
}
