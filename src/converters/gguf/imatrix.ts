/**
 * llama.cpp importance-matrix files, read and normalised exactly as llama-quantize does before passing
 * them to the quantizers (common/imatrix-loader.cpp `common_imatrix_load` and its legacy fallback;
 * tools/quantize/quantize.cpp `load_imatrix`):
 * - GGUF form: tensors `<name>.in_sum2` and `<name>.counts` (both F32) per weight, and metadata
 *   `imatrix.datasets` / `imatrix.chunk_count` / `imatrix.chunk_size` (all three required);
 *   importance = in_sum2 / count per expert row (count = lround(counts[j]); a zero count gives 1s).
 * - Legacy `.dat`: i32 n_entries, then per entry i32 name length, name, i32 ncall, i32 nval, f32[nval];
 *   optionally i32 chunk count, i32 dataset-name length and the name. Importance = sums / ncall (ncall > 0).
 * Any file that is not valid GGUF is tried as legacy, as llama.cpp does.
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { type ReadableFile, withFile } from '../../io/file.js';
import { readGgufHeader } from './format.js';

export interface ImportanceMatrix {
  readonly format: 'gguf' | 'legacy';
  /** GGUF tensor name → importance per column (ne[0], times the expert count for MoE weights). */
  readonly entries: ReadonlyMap<string, Float32Array>;
  readonly datasets: readonly string[];
  readonly chunkCount: number;
}

/** A real imatrix has a few hundred entries of at most ~10^5 columns; these bound hostile files. */
const MAX_ENTRIES = 1 << 20;
const MAX_NAME_BYTES = 4096;
const MAX_VALUES = 1 << 26;

export async function readImatrix(path: string): Promise<ImportanceMatrix> {
  return withFile(path, async (file) => {
    const magic = file.size >= 4 ? new TextDecoder().decode(await file.read(0, 4)) : '';
    return magic === 'GGUF' ? readGgufImatrix(file) : readLegacyImatrix(file);
  });
}

async function readGgufImatrix(file: ReadableFile): Promise<ImportanceMatrix> {
  const header = await readGgufHeader(file.path, file.size, (n) => file.read(0, n));
  const datasets = header.kvs.get('imatrix.datasets');
  const chunkCount = header.kvs.get('imatrix.chunk_count');
  const chunkSize = header.kvs.get('imatrix.chunk_size');
  if (datasets === undefined || chunkCount === undefined || chunkSize === undefined) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, 'missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size)', {
      file: file.path,
      hint: 'llama-quantize refuses such files too; regenerate it with llama-imatrix',
    });
  }
  const pairs = new Map<string, { sums?: (typeof header.tensors)[number]; counts?: (typeof header.tensors)[number] }>();
  for (const tensor of header.tensors) {
    const match = /^(.+)\.(in_sum2|counts)$/.exec(tensor.name);
    if (match === null) continue;
    const pair = pairs.get(match[1] as string) ?? {};
    if (match[2] === 'in_sum2') pair.sums = tensor;
    else pair.counts = tensor;
    pairs.set(match[1] as string, pair);
  }
  const entries = new Map<string, Float32Array>();
  for (const [name, { sums, counts }] of pairs) {
    if (sums === undefined || counts === undefined) {
      throw new PolyquantError(ERROR_CODES.MALFORMED, 'mismatched sums and counts', { file: file.path, tensor: name });
    }
    if (sums.type !== 'F32' || counts.type !== 'F32' || sums.typeId !== 0 || counts.typeId !== 0) {
      throw new PolyquantError(ERROR_CODES.MALFORMED, 'sums and counts must be F32', { file: file.path, tensor: name });
    }
    const values = floatsOf(await file.read(header.dataStart + sums.offset, sums.bytes));
    const countValues = floatsOf(await file.read(header.dataStart + counts.offset, counts.bytes));
    const experts = countValues.length;
    if (experts === 0 || values.length % experts !== 0) {
      throw new PolyquantError(ERROR_CODES.MALFORMED, `${values.length} sums do not split into ${experts} expert rows`, { file: file.path, tensor: name });
    }
    const perExpert = values.length / experts;
    const out = new Float32Array(values.length);
    for (let j = 0; j < experts; j += 1) {
      // (float) lround(count), then float division, as load_imatrix stores into a vector<float>.
      const count = Math.fround(roundHalfAway(countValues[j] as number));
      for (let i = 0; i < perExpert; i += 1) {
        out[j * perExpert + i] = count > 0 ? (values[j * perExpert + i] as number) / count : 1;
      }
    }
    entries.set(name, out);
  }
  if (entries.size === 0) throw new PolyquantError(ERROR_CODES.MALFORMED, 'no imatrix entries in the file', { file: file.path });
  const datasetList = Array.isArray(datasets.value) ? datasets.value.filter((value): value is string => typeof value === 'string') : [];
  return { format: 'gguf', entries, datasets: datasetList, chunkCount: Number(chunkCount.value) };
}

function roundHalfAway(value: number): number {
  return Math.sign(value) * Math.round(Math.abs(value));
}

function floatsOf(bytes: Uint8Array): Float32Array {
  const copy = new Uint8Array(bytes); // alignment: the data may start at any offset of its buffer
  return new Float32Array(copy.buffer, 0, copy.length / 4);
}

async function readLegacyImatrix(file: ReadableFile): Promise<ImportanceMatrix> {
  let at = 0;
  const fail = (detail: string): never => {
    throw new PolyquantError(ERROR_CODES.MALFORMED, `not a GGUF or legacy imatrix file: ${detail}`, { file: file.path });
  };
  const i32 = async (what: string): Promise<number> => {
    if (at + 4 > file.size) fail(`ends before the ${what} at byte ${at}`);
    const bytes = await file.read(at, 4);
    at += 4;
    return new DataView(bytes.buffer, bytes.byteOffset, 4).getInt32(0, true);
  };
  const count = await i32('entry count');
  if (count < 1 || count > MAX_ENTRIES) fail(`entry count ${count}`);
  const entries = new Map<string, Float32Array>();
  for (let entry = 0; entry < count; entry += 1) {
    const length = await i32('name length');
    if (length < 0 || length > MAX_NAME_BYTES || at + length > file.size) fail(`entry ${entry} name length ${length}`);
    const name = new TextDecoder().decode(await file.read(at, length)).replace(/\0.*$/s, '');
    at += length;
    const ncall = await i32('call count');
    const nval = await i32('value count');
    if (nval < 1 || nval > MAX_VALUES || at + 4 * nval > file.size) fail(`entry ${JSON.stringify(name)} has ${nval} values`);
    const sums = floatsOf(await file.read(at, 4 * nval));
    at += 4 * nval;
    const out = new Float32Array(nval);
    // sums / ncall in float (the int converts to float), when ncall > 0; the raw sums otherwise.
    const divisor = Math.fround(ncall);
    for (let i = 0; i < nval; i += 1) out[i] = ncall > 0 ? (sums[i] as number) / divisor : (sums[i] as number);
    entries.set(name, out);
  }
  let chunkCount = 0;
  const datasets: string[] = [];
  if (at + 4 <= file.size) {
    chunkCount = await i32('chunk count');
    if (at + 4 <= file.size) {
      const length = await i32('dataset name length');
      if (length > 0 && length <= MAX_NAME_BYTES && at + length <= file.size) {
        datasets.push(new TextDecoder().decode(await file.read(at, length)).replace(/\0.*$/s, ''));
      }
    }
  }
  return { format: 'legacy', entries, datasets, chunkCount };
}
