/**
 * Access to the ggml golden data in ../shared/golden/ggml (see its manifest.json) and the readable
 * mismatch messages golden tests print (STYLE.md §12: the first bad block's index and both blocks in hex).
 */

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repositoryRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The golden folder, resolved as ../shared from the repository root; absent in a fresh clone. */
export const GOLDEN_DIR = join(repositoryRoot, '..', 'shared', 'golden', 'ggml');
export const HAVE_GOLDEN = existsSync(join(GOLDEN_DIR, 'manifest.json'));

export interface GoldenManifest {
  input: { rows: number; n_per_row: number; rows_meaning: Record<string, string> };
  importance: { n: number };
  types: Record<string, { ggml_type_id: number; block_elements: number; block_bytes: number }>;
}

export function readGoldenManifest(): GoldenManifest {
  return JSON.parse(readFileSync(join(GOLDEN_DIR, 'manifest.json'), 'utf8')) as GoldenManifest;
}

export function readGoldenBytes(name: string): Uint8Array {
  const buffer = readFileSync(join(GOLDEN_DIR, name));
  return new Uint8Array(buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength));
}

export function readGoldenFloats(name: string): Float32Array {
  const bytes = readGoldenBytes(name);
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join(' ');
}

/**
 * Null when `actual` and `expected` are equal byte for byte; otherwise a message naming how many of
 * the `blockBytes`-sized blocks differ, the first one's index (and its row when `blocksPerRow` is given),
 * and both blocks in hex.
 */
export function describeBlockMismatch(
  what: string,
  actual: Uint8Array,
  expected: Uint8Array,
  blockBytes: number,
  blocksPerRow?: number,
): string | null {
  if (actual.length !== expected.length) {
    return `${what}: ${actual.length} bytes, expected ${expected.length}`;
  }
  let first = -1;
  let differing = 0;
  const blocks = Math.ceil(actual.length / blockBytes);
  for (let block = 0; block < blocks; block++) {
    const start = block * blockBytes;
    const end = Math.min(start + blockBytes, actual.length);
    for (let i = start; i < end; i++) {
      if (actual[i] !== expected[i]) {
        if (first < 0) first = block;
        differing++;
        break;
      }
    }
  }
  if (first < 0) return null;
  const start = first * blockBytes;
  const where = blocksPerRow === undefined ? '' : ` (row ${Math.floor(first / blocksPerRow)}, block ${first % blocksPerRow} of the row)`;
  return [
    `${what}: ${differing} of ${blocks} blocks differ; first is block ${first}${where}`,
    `  actual:   ${hex(actual.subarray(start, start + blockBytes))}`,
    `  expected: ${hex(expected.subarray(start, start + blockBytes))}`,
  ].join('\n');
}

/** The same for float arrays compared bit for bit, in blocks of `blockElements` values. */
export function describeFloatMismatch(
  what: string,
  actual: Float32Array,
  expected: Float32Array,
  blockElements: number,
  blocksPerRow?: number,
): string | null {
  return describeBlockMismatch(
    what,
    new Uint8Array(actual.buffer, actual.byteOffset, actual.byteLength),
    new Uint8Array(expected.buffer, expected.byteOffset, expected.byteLength),
    blockElements * 4,
    blocksPerRow,
  );
}
