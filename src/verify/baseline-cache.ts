/**
 * Baselines too large for the reference engine: an HF folder converted once to an f16 GGUF (our own
 * converter: byte-identical to what llama-quantize would make of it), kept in a cache keyed by the
 * checkpoint's content, and run by llama.cpp. The reference engine holds float32 weights in one 4 GiB
 * WebAssembly memory (≈ 1 B parameters); polyglot-ko-1.3b and up go this way.
 *
 * The key is a sha256 over a cache revision, the GGUF type, and the sha256 of every file the conversion
 * reads (config.json, the tokenizer files, the weight files and their index), by name. Hashing 7.6 GB
 * takes a few seconds, so each file's hash is remembered by (path, size, mtime, inode) in `hashes.json`;
 * an unchanged file is not read again. The GGUF goes to `<cache>/gguf/<key>.gguf` (the converter writes
 * under a temp name and renames), with `<key>.json` beside it saying where it came from.
 *
 * Cache folder: POLYQUANT_CACHE_DIR, else $XDG_CACHE_HOME/polyquant, else ~/.cache/polyquant. Entries are
 * never evicted automatically (an f16 3.8b is 7.6 GB): `rm -r` the folder, or a `<key>.*` pair, to free it.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, realpath, stat, utimes } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, join, relative, resolve } from 'node:path';
import { convertToGguf } from '../converters/gguf/convert.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { ioError, pathExists, writeAtomically } from '../io/file.js';
import { type Checkpoint, readCheckpoint } from '../readers/checkpoint.js';
import { TOKENIZER_FILE_NAMES } from '../readers/tokenizer.js';

/** Bump when the converter's output for the same input changes: old entries then miss. */
const CACHE_REVISION = 1;
const HASH_MEMO = 'hashes.json';

export type BaselineGgufType = 'f16' | 'f32' | 'bf16';

export interface BaselineCacheOptions {
  /** The cache folder (default: see the header). */
  readonly dir?: string;
  /** GGUF type of the baseline: `f16` (default; what llama.cpp users run), `bf16`, or `f32` (exact float32 arithmetic, twice the size). */
  readonly type?: BaselineGgufType;
  /** Converter worker threads. */
  readonly workers?: number;
  readonly onProgress?: (event: BaselineCacheProgress) => void;
}

export type BaselineCacheProgress =
  | { readonly stage: 'hash'; readonly file: string; readonly done: number; readonly total: number }
  | { readonly stage: 'convert'; readonly file: string; readonly done: number; readonly total: number };

export interface CachedBaseline {
  /** The GGUF file, absolute. */
  readonly file: string;
  readonly type: BaselineGgufType;
  /** The content key (hex sha256). */
  readonly key: string;
  /** Whether the file was already in the cache. */
  readonly hit: boolean;
  /** Seconds spent hashing and converting in this call. */
  readonly seconds: number;
}

/** The cache folder: POLYQUANT_CACHE_DIR, else $XDG_CACHE_HOME/polyquant, else ~/.cache/polyquant. */
export function defaultCacheDir(): string {
  const explicit = process.env['POLYQUANT_CACHE_DIR'];
  if (explicit !== undefined && explicit !== '') return resolve(explicit);
  const xdg = process.env['XDG_CACHE_HOME'];
  return join(xdg !== undefined && xdg !== '' ? resolve(xdg) : join(homedir(), '.cache'), 'polyquant');
}

interface HashMemoEntry {
  readonly size: number;
  readonly mtimeMs: number;
  readonly ino: number;
  readonly sha256: string;
}

/** A small text file written under a temp name and renamed into place. */
function writeText(file: string, text: string): Promise<void> {
  return writeAtomically(file, (out) => out.write(new TextEncoder().encode(text)));
}

async function readMemo(file: string): Promise<Record<string, HashMemoEntry>> {
  try {
    const parsed: unknown = JSON.parse(await readFile(file, 'utf8'));
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, HashMemoEntry>) : {};
  } catch {
    // Missing or damaged: every file is hashed again, and the memo rewritten.
    return {};
  }
}

async function sha256File(file: string, onBytes: (bytes: number) => void): Promise<string> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: 8 << 20 })) {
      hash.update(chunk as Buffer);
      onBytes((chunk as Buffer).length);
    }
  } catch (error) {
    throw ioError(file, 'read (to hash it for the baseline cache)', error);
  }
  return hash.digest('hex');
}

/** Every file the conversion reads, absolute: config, tokenizer files present, weight index and files. */
async function inputFiles(checkpoint: Checkpoint): Promise<string[]> {
  const files = [join(checkpoint.dir, 'config.json')];
  for (const name of Object.values(TOKENIZER_FILE_NAMES)) {
    const file = join(checkpoint.dir, name);
    if (await pathExists(file)) files.push(file);
  }
  if (checkpoint.weights.index !== undefined) files.push(resolve(checkpoint.dir, checkpoint.weights.index));
  for (const weight of checkpoint.weights.files) files.push(resolve(checkpoint.dir, weight.path));
  return files;
}

/**
 * The content key of an HF folder for a GGUF type: hashes every input file (or takes its remembered hash
 * when its size, mtime and inode are unchanged).
 */
export async function baselineKey(checkpoint: Checkpoint, type: BaselineGgufType, cacheDir: string, onProgress?: BaselineCacheOptions['onProgress']): Promise<string> {
  const parts = await hashModelFiles(checkpoint, cacheDir, onProgress);
  return createHash('sha256').update(JSON.stringify({ revision: CACHE_REVISION, type, files: parts })).digest('hex');
}

/**
 * The sha256 of an HF folder's content: of every file a conversion reads (config.json, tokenizer files,
 * weight index and files), by name within the folder, so a copy elsewhere hashes the same. Each file's
 * hash is remembered in `memoDir`'s hashes.json (see baselineKey), so an unchanged folder is not read again.
 */
export async function modelContentHash(checkpoint: Checkpoint, memoDir: string = defaultCacheDir(), onProgress?: BaselineCacheOptions['onProgress']): Promise<string> {
  const parts = await hashModelFiles(checkpoint, resolve(memoDir), onProgress);
  return createHash('sha256').update(JSON.stringify({ files: parts })).digest('hex');
}

/** [name within the folder, sha256] of every file a conversion of the checkpoint reads, through the memo. */
async function hashModelFiles(checkpoint: Checkpoint, cacheDir: string, onProgress?: BaselineCacheOptions['onProgress']): Promise<[string, string][]> {
  const files = await inputFiles(checkpoint);
  const memoFile = join(cacheDir, HASH_MEMO);
  const memo = await readMemo(memoFile);
  const stats = await Promise.all(
    files.map(async (file) => {
      try {
        return { file, real: await realpath(file), stat: await stat(file) };
      } catch (error) {
        throw ioError(file, 'read (for the baseline cache)', error);
      }
    }),
  );
  const total = stats.reduce((sum, entry) => sum + entry.stat.size, 0);
  let done = 0;
  let changed = false;
  const parts: [string, string][] = [];
  for (const { file, real, stat: info } of stats) {
    const remembered = memo[real];
    let sha256: string;
    if (remembered !== undefined && remembered.size === info.size && remembered.mtimeMs === info.mtimeMs && remembered.ino === info.ino) {
      sha256 = remembered.sha256;
      done += info.size;
    } else {
      sha256 = await sha256File(file, (bytes) => {
        done += bytes;
        onProgress?.({ stage: 'hash', file, done, total });
      });
      memo[real] = { size: info.size, mtimeMs: info.mtimeMs, ino: info.ino, sha256 };
      changed = true;
    }
    // By name within the folder: the same checkpoint copied elsewhere has the same key.
    parts.push([relative(checkpoint.dir, file), sha256]);
  }
  if (changed) {
    await mkdir(cacheDir, { recursive: true });
    await writeText(memoFile, `${JSON.stringify(memo)}\n`);
  }
  return parts;
}

/** The HF folder's (or already read checkpoint's) GGUF of `type` from the cache, converting it first when it is not there. */
export async function cachedBaselineGguf(source: string | Checkpoint, options: BaselineCacheOptions = {}): Promise<CachedBaseline> {
  const started = performance.now();
  const type = options.type ?? 'f16';
  if (type !== 'f16' && type !== 'f32' && type !== 'bf16') {
    throw new PolyquantError(ERROR_CODES.USAGE, `baseline GGUF type ${JSON.stringify(type)}; expected f16, bf16 or f32`);
  }
  const cacheDir = resolve(options.dir ?? defaultCacheDir());
  const checkpoint = typeof source === 'string' ? await readCheckpoint(source) : source;
  const key = await baselineKey(checkpoint, type, cacheDir, options.onProgress);
  const ggufDir = join(cacheDir, 'gguf');
  const file = join(ggufDir, `${key.slice(0, 32)}-${type}.gguf`);
  const sidecar = join(ggufDir, `${key.slice(0, 32)}-${type}.json`);
  if (await pathExists(file)) {
    const now = new Date();
    // Last use, for whoever prunes the cache by age.
    await utimes(sidecar, now, now).catch(() => undefined);
    return { file, type, key, hit: true, seconds: (performance.now() - started) / 1000 };
  }
  try {
    await mkdir(ggufDir, { recursive: true });
  } catch (error) {
    throw ioError(ggufDir, 'create the baseline cache folder', error);
  }
  await convertToGguf(checkpoint.dir, {
    type,
    out: file,
    name: basename(checkpoint.dir),
    ...(options.workers !== undefined && { workers: options.workers }),
    onProgress: (done, total) => options.onProgress?.({ stage: 'convert', file, done, total }),
  });
  await writeText(sidecar, `${JSON.stringify({ source: checkpoint.dir, type, key, created: new Date().toISOString() }, null, 2)}\n`);
  return { file, type, key, hit: false, seconds: (performance.now() - started) / 1000 };
}
