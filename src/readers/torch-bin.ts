/**
 * PyTorch `.bin` checkpoints in the zip format torch.save has written since 1.6: reading into lazy
 * TensorRefs, and writing a file torch.load reads as the same state dict.
 *
 * Layout (torch/serialization.py `_save`, caffe2/serialize/inline_container.cc): a zip of STORED records
 * under one top folder (`archive/`, or the file's stem such as `pytorch_model/`): `data.pkl` (the pickled
 * state dict, see pickle.ts), `byteorder` (torch ≥ 2.1), `data/<key>` (one record per storage, its raw
 * little-endian elements), `version`. A tensor is a view of a storage: storage_offset, size and stride in
 * elements. Contiguous views become byte ranges of the file; strided ones are gathered on read.
 */
import { ERROR_CODES, PolyquantError, guardFormat, malformed } from '../errors.js';
import { ReadableFile, withFile, writeAtomically } from '../io/file.js';
import { ZipWriter, planZip, type ZipPlan } from '../io/zip-writer.js';
import { type ByteSource, type ZipArchive, type ZipEntry, readZip, readZipEntry, requireStored } from '../io/zip.js';
import { DTYPES, type DType, elementCountBig, isDType } from '../tensor/dtype.js';
import {
  FileRangeTensor,
  type TensorRef,
  type TensorToWrite,
  checkRowsPerChunk,
  rowLayout,
} from './tensor-ref.js';
import { type PickledTensor, contiguousStrides, pickleStateDict, unpickleStateDict } from './pickle.js';

export interface TorchBinFile {
  readonly path: string;
  /** In state-dict order. */
  readonly tensors: TensorRef[];
  /** The archive's top folder with its trailing slash, e.g. `archive/` or `pytorch_model/`. */
  readonly archivePrefix: string;
}

// Limits. Each bounds what a hostile file can make us read or allocate.
/** A state dict pickle is ~130 bytes per tensor: 16 MiB is ~120k tensors (polyglot-ko-3.8b has 390). */
export const MAX_PICKLE_BYTES = 16 * 1024 * 1024;
/** The models polyquant converts have rank ≤ 4; the bound keeps per-element index math small. */
export const MAX_TENSOR_RANK = 16;
/**
 * A strided (non-contiguous) view is gathered from reads of the storage range it covers; one read may be
 * at most this large. polyglot-ko-12.8b's largest tensor (30080×5120 f16) is 308 MB.
 */
export const MAX_GATHER_SPAN_BYTES = 1024 * 1024 * 1024;
/** `byteorder` holds "little" or "big". */
const MAX_BYTEORDER_BYTES = 16;

const LEGACY_HINT =
  "re-save it in the zip format with python -c \"import torch; p='FILE'; torch.save(torch.load(p), p, _use_new_zipfile_serialization=True)\", or convert it to safetensors";

/** Where one tensor's elements are, as the pickle and the zip directory say, checked against each other. */
export interface TorchTensorLayout {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** In elements. */
  readonly stride: readonly number[];
  /** In elements. */
  readonly storageOffset: number;
  /** The zip entry holding the storage, e.g. `archive/data/3`. */
  readonly storageEntry: string;
  /** Absolute file offset of the storage's first element. */
  readonly storageDataOffset: number;
  readonly storageNumel: number;
  readonly byteLength: number;
  /** Row-major without gaps: the tensor is the byte range dataOffset..dataOffset+byteLength. */
  readonly contiguous: boolean;
  /** Absolute file offset of the tensor's first element. */
  readonly dataOffset: number;
}

export interface TorchBinLayout {
  readonly path: string;
  readonly archivePrefix: string;
  readonly tensors: readonly TorchTensorLayout[];
}

/**
 * Parses a .bin's zip directory and pickle and checks every tensor against its storage record. Reads only
 * the directory and the small records; works on any ByteSource (the fuzz test runs it in memory).
 */
export async function parseTorchBin(source: ByteSource): Promise<TorchBinLayout> {
  const file = source.path;
  const magic = await source.read(0, Math.min(source.size, 2));
  if (magic[0] === 0x80) {
    // The legacy format (torch < 1.6 or _use_new_zipfile_serialization=False) starts with a pickled magic
    // number: PROTO 2, LONG1 0x1950a86a20f9469cfc6c (torch/serialization.py MAGIC_NUMBER).
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'this is a legacy (pre-1.6, non-zip) torch.save file', {
      file,
      hint: LEGACY_HINT.replace('FILE', file),
    });
  }
  if (magic[0] !== 0x50 || magic[1] !== 0x4b) {
    throw malformed(file, 'not a PyTorch checkpoint: the file is not a zip archive (it does not start with "PK")');
  }

  const archive = await readZip(source);
  const prefix = findArchivePrefix(archive);

  const byteorder = archive.byName.get(`${prefix}byteorder`);
  if (byteorder !== undefined) {
    const order = new TextDecoder().decode(await readZipEntry(source, byteorder, MAX_BYTEORDER_BYTES));
    if (order === 'big') {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'the checkpoint was saved on a big-endian machine', {
        file,
        hint: 'load and re-save it with torch on a little-endian machine, or convert it to safetensors',
      });
    }
    if (order !== 'little') throw malformed(file, `the byteorder record says ${JSON.stringify(order)}`);
  }

  const pickleEntry = archive.byName.get(`${prefix}data.pkl`)!;
  const pickled = unpickleStateDict(await readZipEntry(source, pickleEntry, MAX_PICKLE_BYTES), file, pickleEntry.name);
  const storages = new Map<string, { dtype: DType; numel: number; entry: ZipEntry }>();
  const tensors = pickled.map((tensor) => layoutTensor(file, archive, prefix, storages, tensor));
  return { path: file, archivePrefix: prefix, tensors };
}

/** The top folder holding `data.pkl`: torch names it after the file (`pytorch_model/`) or `archive/`. */
function findArchivePrefix(archive: ZipArchive): string {
  const prefixes = archive.entries
    .map((entry) => /^([^/]+\/)data\.pkl$/.exec(entry.name)?.[1])
    .filter((prefix): prefix is string => prefix !== undefined);
  if (prefixes.length === 0) {
    throw malformed(archive.path, 'the zip archive has no <folder>/data.pkl record: it is not a torch.save checkpoint');
  }
  if (prefixes.length > 1) {
    throw malformed(archive.path, `the zip archive has several data.pkl records (${prefixes.join(', ')})`);
  }
  return prefixes[0]!;
}

function layoutTensor(
  file: string,
  archive: ZipArchive,
  prefix: string,
  storages: Map<string, { dtype: DType; numel: number; entry: ZipEntry }>,
  tensor: PickledTensor,
): TorchTensorLayout {
  const { name, storage, storageOffset, shape, stride } = tensor;
  const fail = (detail: string) => malformed(file, detail, { tensor: name });
  const itemBytes = DTYPES[storage.dtype].bytes;

  // The storage record: present, stored, and exactly numel × itemsize bytes.
  const entryName = `${prefix}data/${storage.key}`;
  let known = storages.get(storage.key);
  if (known === undefined) {
    const entry = archive.byName.get(entryName);
    if (entry === undefined) throw fail(`storage record ${JSON.stringify(entryName)} is missing from the archive`);
    requireStored(file, entry);
    const expected = BigInt(storage.numel) * BigInt(itemBytes);
    if (BigInt(entry.size) !== expected) {
      throw fail(
        `storage record ${JSON.stringify(entryName)} is ${entry.size} bytes, but the pickle declares ${storage.numel} ${storage.dtype} elements (${expected} bytes)`,
      );
    }
    known = { dtype: storage.dtype, numel: storage.numel, entry };
    storages.set(storage.key, known);
  } else if (known.dtype !== storage.dtype || known.numel !== storage.numel) {
    throw fail(
      `storage ${JSON.stringify(storage.key)} is declared as ${known.numel} ${known.dtype} and as ${storage.numel} ${storage.dtype}`,
    );
  }

  // Shape, stride and offset: sane integers before any arithmetic.
  if (shape.length > MAX_TENSOR_RANK) {
    throw new PolyquantError(ERROR_CODES.LIMIT, `rank ${shape.length} is more than the limit of ${MAX_TENSOR_RANK}`, {
      file,
      tensor: name,
    });
  }
  if (stride.length !== shape.length) {
    throw fail(`stride [${stride.join(', ')}] does not match shape [${shape.join(', ')}]`);
  }
  if (shape.some((dim) => dim < 0)) throw fail(`shape [${shape.join(', ')}] has a negative dimension`);
  if (stride.some((step) => step < 0)) {
    throw fail(`stride [${stride.join(', ')}] is negative, which torch tensors cannot have`);
  }
  if (storageOffset < 0) throw fail(`storage offset ${storageOffset} is negative`);

  const numel = elementCountBig(shape);
  const byteLength = numel * BigInt(itemBytes);
  if (byteLength > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new PolyquantError(ERROR_CODES.LIMIT, `shape [${shape.join(', ')}] is ${byteLength} bytes, past 2^53`, {
      file,
      tensor: name,
    });
  }
  const storageDataOffset = known.entry.dataOffset;
  const base = {
    name,
    dtype: storage.dtype,
    shape,
    stride,
    storageOffset,
    storageEntry: entryName,
    storageDataOffset,
    storageNumel: storage.numel,
    byteLength: Number(byteLength),
  };
  if (numel === 0n) {
    if (storageOffset > storage.numel) throw fail(`storage offset ${storageOffset} is past the storage's ${storage.numel} elements`);
    return { ...base, contiguous: true, dataOffset: storageDataOffset };
  }

  // The last element the view touches must be inside the storage (at::native::checkInBoundsForStorage).
  let lastIndex = BigInt(storageOffset);
  for (let dim = 0; dim < shape.length; dim++) lastIndex += BigInt(shape[dim]! - 1) * BigInt(stride[dim]!);
  if (lastIndex >= BigInt(storage.numel)) {
    throw fail(
      `the view (offset ${storageOffset}, shape [${shape.join(', ')}], stride [${stride.join(', ')}]) reaches element ${lastIndex} of a ${storage.numel}-element storage`,
    );
  }
  const dataOffset = storageDataOffset + storageOffset * itemBytes;

  const expected = contiguousStrides(shape);
  const contiguous = shape.every((dim, index) => dim === 1 || stride[index] === expected[index]);
  if (!contiguous) checkNonOverlapping(file, name, shape, stride);
  return { ...base, contiguous, dataOffset };
}

/**
 * A strided view can be gathered element by element, but one whose elements overlap (a stride-0
 * broadcast, `expand`) could describe far more bytes than the file holds; torch.save of such a view is
 * rare and `.contiguous()` fixes it. Sufficient test: sorted by stride, each dimension steps past
 * everything the smaller ones reach.
 */
function checkNonOverlapping(file: string, name: string, shape: readonly number[], stride: readonly number[]): void {
  const dims = shape
    .map((size, index) => ({ size, stride: stride[index]! }))
    .filter((dim) => dim.size > 1)
    .sort((a, b) => a.stride - b.stride);
  let reach = 0n;
  for (const dim of dims) {
    if (BigInt(dim.stride) <= reach) {
      throw new PolyquantError(
        ERROR_CODES.UNSUPPORTED,
        `shape [${shape.join(', ')}] with stride [${stride.join(', ')}] is a view whose elements overlap`,
        { file, tensor: name, hint: 'save tensor.contiguous() (or .clone()) instead of the view' },
      );
    }
    reach += BigInt(dim.size - 1) * BigInt(dim.stride);
  }
}

/** Row geometry as rows() sees a tensor: rank ≤ 1 is one row, otherwise rows are the first dimension. */
function rowGeometry(layout: TorchTensorLayout): {
  rows: number;
  rowStride: number;
  innerShape: readonly number[];
  innerStride: readonly number[];
  innerReach: number;
} {
  const { shape, stride } = layout;
  const inner = shape.length <= 1 ? 0 : 1;
  const innerShape = shape.slice(inner);
  const innerStride = stride.slice(inner);
  let innerReach = 0;
  for (let dim = 0; dim < innerShape.length; dim++) innerReach += (innerShape[dim]! - 1) * innerStride[dim]!;
  return {
    rows: shape.length <= 1 ? 1 : shape[0]!,
    rowStride: shape.length <= 1 ? 0 : stride[0]!,
    innerShape,
    innerStride,
    innerReach,
  };
}

/** The storage elements rows firstRow..firstRow+rowCount-1 touch, as [first, last] element indices. */
function rowSpan(layout: TorchTensorLayout, firstRow: number, rowCount: number): { first: number; last: number } {
  const { rowStride, innerReach } = rowGeometry(layout);
  const first = layout.storageOffset + firstRow * rowStride;
  return { first, last: first + (rowCount - 1) * rowStride + innerReach };
}

/** Copies rows of a strided view into row-major order from `span`, the storage bytes from element `spanFirst`. */
function gatherRows(
  layout: TorchTensorLayout,
  span: Uint8Array,
  spanFirst: number,
  firstRow: number,
  rowCount: number,
): Uint8Array {
  const item = DTYPES[layout.dtype].bytes;
  const { rowStride, innerShape, innerStride } = rowGeometry(layout);
  const lastDim = innerShape.length - 1;
  const runLength = lastDim >= 0 ? innerShape[lastDim]! : 1;
  const runStride = lastDim >= 0 ? innerStride[lastDim]! : 1;
  const rowElements = innerShape.reduce((product, dim) => product * dim, 1);
  const output = new Uint8Array(rowCount * rowElements * item);
  const index = new Array<number>(Math.max(lastDim, 0)).fill(0);
  let out = 0;
  for (let row = 0; row < rowCount; row++) {
    let element = layout.storageOffset + (firstRow + row) * rowStride - spanFirst;
    index.fill(0);
    for (;;) {
      if (runStride === 1 || runLength === 1) {
        output.set(span.subarray(element * item, (element + runLength) * item), out);
        out += runLength * item;
      } else {
        for (let step = 0; step < runLength; step++) {
          const from = (element + step * runStride) * item;
          for (let byte = 0; byte < item; byte++) output[out++] = span[from + byte]!;
        }
      }
      // Advance the odometer over every inner dimension but the last.
      let dim = lastDim - 1;
      for (; dim >= 0; dim--) {
        index[dim]! += 1;
        element += innerStride[dim]!;
        if (index[dim]! < innerShape[dim]!) break;
        element -= innerStride[dim]! * innerShape[dim]!;
        index[dim] = 0;
      }
      if (dim < 0) break;
    }
  }
  return output;
}

function spanLimitError(layout: TorchTensorLayout, file: string, bytes: number): PolyquantError {
  return new PolyquantError(
    ERROR_CODES.LIMIT,
    `gathering this strided view (shape [${layout.shape.join(', ')}], stride [${layout.stride.join(', ')}]) needs a ${bytes}-byte read, more than the limit of ${MAX_GATHER_SPAN_BYTES}`,
    { file, tensor: layout.name, hint: 'save tensor.contiguous() instead of the view' },
  );
}

/** Reads rows of a tensor through `source`: one range read if contiguous, else a gather. */
async function readRows(source: ByteSource, layout: TorchTensorLayout, firstRow: number, rowCount: number) {
  const item = DTYPES[layout.dtype].bytes;
  if (layout.contiguous) {
    const { rows } = rowGeometry(layout);
    const rowBytes = rows === 0 ? 0 : layout.byteLength / rows;
    return source.read(layout.dataOffset + firstRow * rowBytes, rowCount * rowBytes);
  }
  const { first, last } = rowSpan(layout, firstRow, rowCount);
  const bytes = (last - first + 1) * item;
  if (bytes > MAX_GATHER_SPAN_BYTES) throw spanLimitError(layout, source.path, bytes);
  const span = await source.read(layout.storageDataOffset + first * item, bytes);
  return gatherRows(layout, span, first, firstRow, rowCount);
}

/** A whole tensor's bytes, row-major, read through `source` (a ReadableFile, or memory in tests). */
export async function readTensorBytes(source: ByteSource, layout: TorchTensorLayout): Promise<Uint8Array> {
  if (layout.byteLength === 0) return new Uint8Array(0);
  return readRows(source, layout, 0, rowGeometry(layout).rows);
}

/** Row chunks of a tensor through `source`, reading each storage byte about once. */
export async function* tensorRowChunks(
  source: ByteSource,
  layout: TorchTensorLayout,
  rowsPerChunk: number,
): AsyncIterable<Uint8Array> {
  checkRowsPerChunk(layout.name, rowsPerChunk);
  const { rows, rowBytes } = rowLayout(layout.dtype, layout.shape);
  if (rows === 0 || rowBytes === 0) return;
  if (layout.contiguous) {
    for (let row = 0; row < rows; row += rowsPerChunk) yield await readRows(source, layout, row, Math.min(rowsPerChunk, rows - row));
    return;
  }
  // A strided view's row chunks may each cover most of the storage (a transpose does): then read the
  // whole span once and gather every chunk from it, rather than re-reading it per chunk.
  const item = DTYPES[layout.dtype].bytes;
  const whole = rowSpan(layout, 0, rows);
  const wholeBytes = (whole.last - whole.first + 1) * item;
  let chunkBytesTotal = 0;
  let chunkBytesMax = 0;
  for (let row = 0; row < rows; row += rowsPerChunk) {
    const span = rowSpan(layout, row, Math.min(rowsPerChunk, rows - row));
    const bytes = (span.last - span.first + 1) * item;
    chunkBytesTotal += bytes;
    chunkBytesMax = Math.max(chunkBytesMax, bytes);
  }
  if (chunkBytesTotal <= 2 * wholeBytes && chunkBytesMax <= MAX_GATHER_SPAN_BYTES) {
    for (let row = 0; row < rows; row += rowsPerChunk) yield await readRows(source, layout, row, Math.min(rowsPerChunk, rows - row));
    return;
  }
  if (wholeBytes > MAX_GATHER_SPAN_BYTES) throw spanLimitError(layout, source.path, wholeBytes);
  const span = await source.read(layout.storageDataOffset + whole.first * item, wholeBytes);
  for (let row = 0; row < rows; row += rowsPerChunk) {
    yield gatherRows(layout, span, whole.first, row, Math.min(rowsPerChunk, rows - row));
  }
}

/** A non-contiguous view (a transposed weight, a strided slice), gathered into row-major order on read. */
export class StridedTensor implements TensorRef {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly byteLength: number;

  constructor(
    readonly layout: TorchTensorLayout,
    readonly file: string,
  ) {
    this.name = layout.name;
    this.dtype = layout.dtype;
    this.shape = layout.shape;
    this.byteLength = layout.byteLength;
  }

  read(): Promise<Uint8Array> {
    return withFile(this.file, (file) => readTensorBytes(file, this.layout));
  }

  async *rows(rowsPerChunk: number): AsyncIterable<Uint8Array> {
    checkRowsPerChunk(this.name, rowsPerChunk);
    const file = await ReadableFile.open(this.file);
    try {
      yield* tensorRowChunks(file, this.layout, rowsPerChunk);
    } finally {
      await file.close();
    }
  }
}

/** Opens a torch.save `.bin` checkpoint: tensor names, dtypes, shapes and where their bytes are. */
export async function readTorchBin(path: string): Promise<TorchBinFile> {
  const layout = await withFile(path, (file) => guardFormat(path, 'PyTorch checkpoint', () => parseTorchBin(file)));
  return {
    path,
    archivePrefix: layout.archivePrefix,
    tensors: layout.tensors.map((tensor) =>
      tensor.contiguous
        ? new FileRangeTensor(tensor.name, tensor.dtype, tensor.shape, path, tensor.dataOffset)
        : new StridedTensor(tensor, path),
    ),
  };
}

export interface TorchBinWriteOptions {
  /** The archive's top folder. torch.save uses `archive` for buffers and the file stem for paths. */
  readonly archiveName?: string;
  /** torch.save(model.state_dict()) pickles an OrderedDict; torch.save({...}) a plain dict. */
  readonly container?: 'OrderedDict' | 'dict';
  /** torch ≥ 2.1 writes a `byteorder` record; 1.13 does not. */
  readonly byteorderRecord?: boolean;
}

/** One record of the archive, in write order. */
export interface TorchBinRecord {
  readonly name: string;
  readonly size: number;
  /** Small records' bytes; storage records stream from their tensor. */
  readonly bytes?: Uint8Array;
  readonly tensor?: TensorToWrite;
}

export interface TorchBinPlan {
  readonly pickle: Uint8Array;
  readonly records: readonly TorchBinRecord[];
  readonly zip: ZipPlan;
}

const textEncoder = new TextEncoder();
/** torch's file format version for eager torch.save (caffe2 kProducedFileFormatVersion). */
const TORCH_FILE_FORMAT_VERSION = '3\n';

/**
 * Lays out the whole archive before anything is written (STYLE.md §6): the pickle, and every record's
 * offset and size, in torch.save's order — data.pkl, byteorder, data/<key> in sorted key order (torch
 * iterates `sorted(serialized_storages.keys())`, so "10" comes before "2"), version.
 */
export function planTorchBin(
  path: string,
  tensors: readonly TensorToWrite[],
  options: TorchBinWriteOptions = {},
): TorchBinPlan {
  const archiveName = options.archiveName ?? 'archive';
  if (!/^[^/]+$/.test(archiveName)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `invalid archive name ${JSON.stringify(archiveName)}`, { file: path });
  }
  const names = new Set<string>();
  const sizes = tensors.map((tensor) => {
    const fail = (detail: string) => new PolyquantError(ERROR_CODES.USAGE, detail, { file: path, tensor: tensor.name });
    if (names.has(tensor.name)) throw fail('two tensors have this name');
    names.add(tensor.name);
    if (!isDType(tensor.dtype)) throw fail(`unknown dtype ${String(tensor.dtype)}`);
    if (tensor.shape.length > MAX_TENSOR_RANK) throw fail(`rank ${tensor.shape.length} is more than ${MAX_TENSOR_RANK}`);
    if (!tensor.shape.every((dim) => Number.isSafeInteger(dim) && dim >= 0)) {
      throw fail(`invalid shape [${tensor.shape.join(', ')}]`);
    }
    const bytes = elementCountBig(tensor.shape) * BigInt(DTYPES[tensor.dtype].bytes);
    if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) throw fail(`shape [${tensor.shape.join(', ')}] is past 2^53 bytes`);
    return Number(bytes);
  });

  const keys = tensors.map((_, index) => String(index));
  const pickle = pickleStateDict(
    tensors.map((tensor, index) => ({
      name: tensor.name,
      dtype: tensor.dtype,
      storageKey: keys[index]!,
      shape: tensor.shape,
    })),
    options.container ?? 'OrderedDict',
  );
  const prefix = `${archiveName}/`;
  const records: TorchBinRecord[] = [{ name: `${prefix}data.pkl`, size: pickle.length, bytes: pickle }];
  if (options.byteorderRecord ?? true) {
    const little = textEncoder.encode('little');
    records.push({ name: `${prefix}byteorder`, size: little.length, bytes: little });
  }
  const order = keys.map((key, index) => ({ key, index })).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const { key, index } of order) {
    records.push({ name: `${prefix}data/${key}`, size: sizes[index]!, tensor: tensors[index]! });
  }
  const version = textEncoder.encode(TORCH_FILE_FORMAT_VERSION);
  records.push({ name: `${prefix}version`, size: version.length, bytes: version });
  return { pickle, records, zip: planZip(records) };
}

/**
 * Writes tensors as a torch.save(state_dict) checkpoint: streamed chunk by chunk to a temp file that is
 * renamed into place at the end, each tensor's byte count checked, deterministic (fixed zip timestamps,
 * no random ids). ZIP64 records appear where sizes or offsets pass 4 GB, as torch writes them.
 */
export async function writeTorchBin(
  path: string,
  tensors: readonly TensorToWrite[],
  options: TorchBinWriteOptions = {},
): Promise<{ bytes: number }> {
  const plan = planTorchBin(path, tensors, options);
  await writeAtomically(path, async (file) => {
    const zip = new ZipWriter(file, path);
    for (const [index, record] of plan.records.entries()) {
      const data = record.bytes ?? record.tensor!.chunks();
      const layout = await zip.add(record.name, record.size, data, record.tensor?.name);
      if (layout.headerOffset !== plan.zip.entries[index]!.headerOffset) {
        throw new PolyquantError(ERROR_CODES.IO, `record ${record.name} was written at an unplanned offset`, { file: path });
      }
    }
    const total = await zip.finish();
    if (total !== plan.zip.totalBytes) {
      throw new PolyquantError(ERROR_CODES.IO, `wrote ${total} bytes where ${plan.zip.totalBytes} were planned`, {
        file: path,
      });
    }
  });
  return { bytes: plan.zip.totalBytes };
}
