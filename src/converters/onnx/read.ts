/**
 * A validating reader of ONNX model files, for `inspect` and for the onnxruntime engine to call before it
 * creates a session. It decodes the ModelProto with onnx-proto and checks what onnxruntime needs to load
 * it, in an order where each check guards the next (STYLE.md §8):
 *
 * 1. the file is a regular file under protobuf's 2 GiB message limit, then decodes as a ModelProto;
 * 2. the model declares an IR version and at least one opset, and has a graph;
 * 3. every tensor it stores — initializers, sparse initializers, tensor attributes (Constant nodes), in
 *    subgraphs and functions too — has a data type, non-negative safe-integer dims and an element count
 *    whose byte size is a safe integer; inline data is as long as the dims say;
 * 4. external data: `location` is a relative name inside the model's folder (no absolute path, no `..`:
 *    onnxruntime refuses both, and a hostile model must not make us stat or read elsewhere), the file
 *    exists beside the .onnx and is a regular file, `offset` / `length` are decimal safe integers, the range
 *    lies inside the file, and `length` is exactly the tensor's size (specs/onnx.md §4).
 *
 * Bad bytes only ever produce a PolyquantError: the decode and the walk run under a guard that turns a
 * RangeError / TypeError from protobufjs into MALFORMED naming the file, and a fuzz test holds that.
 * Graph semantics (does a node's input exist, are the shapes consistent) stay onnxruntime's business.
 */
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { fileKind, ioError, withFile } from '../../io/file.js';
import {
  decodeModel,
  type GraphProto,
  type NodeProto,
  ONNX_DATA_TYPE_BY_ID,
  ONNX_DATA_TYPES,
  type OnnxDataTypeName,
  onnx,
  type TensorProto,
  type ValueInfoProto,
} from './proto.js';
import { ONNX_SUBFOLDER, ONNX_TYPE_NAMES, type OnnxTypeName, onnxTypeOfFile } from './types.js';

/**
 * Largest .onnx file read: protobuf refuses a message of 2 GiB or more (onnx.checker's MAXIMUM_PROTOBUF,
 * specs/onnx.md §4). A bigger model must keep its initializers in external data.
 */
export const MAX_ONNX_MODEL_BYTES = 2 ** 31 - 1;
/** Subgraphs (If / Loop / Scan bodies) nested deeper than this are refused: no exporter writes them, and it bounds the walk. */
export const MAX_GRAPH_NESTING = 64;

/** TensorProto.DataLocation.EXTERNAL (onnx.proto). */
const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL;
/** The default operator domain, which onnx.proto writes as the empty string; reported by its name. */
const DEFAULT_DOMAIN = 'ai.onnx';

/** A dimension of a graph input or output: a number, a symbolic name, or null when the model leaves it unknown. */
export type OnnxDim = number | string | null;

export interface OnnxValueSummary {
  readonly name: string;
  /** TensorProto.DataType name (`FLOAT`, `INT64`, …), `DATA_TYPE_<id>` for one polyquant has no row for, or the non-tensor kind (`sequence`, `map`, …). */
  readonly elemType: string;
  readonly dims: readonly OnnxDim[];
}

/** An attribute's value as reported: ints beyond 2^53 as decimal strings; tensors and graphs by kind only. */
export type OnnxAttributeValue = number | string | readonly (number | string)[] | { readonly kind: 'tensor' | 'graph' | 'sparse-tensor' | 'tensors' | 'graphs' | 'sparse-tensors' | 'type-protos' };

export interface OnnxNodeSummary {
  readonly name: string;
  readonly opType: string;
  /** `ai.onnx` for the default domain. */
  readonly domain: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attributes: Readonly<Record<string, OnnxAttributeValue>>;
}

export interface OnnxExternalRange {
  /** As written in the model: relative to the .onnx file's folder. */
  readonly location: string;
  readonly offset: number;
  readonly length: number;
}

export interface OnnxTensorSummary {
  readonly name: string;
  readonly dataType: string;
  readonly dataTypeId: number;
  readonly dims: readonly number[];
  readonly elements: number;
  /** Bytes of the data: elements × type size for the types polyquant sizes, else the stored length. */
  readonly bytes: number;
  /** `inline` (in the .onnx) or where in external data. */
  readonly storage: 'inline' | OnnxExternalRange;
}

export interface OnnxDataFileSummary {
  readonly location: string;
  readonly path: string;
  /** The file's size on disk. */
  readonly bytes: number;
  /** Tensors stored in it, and the bytes they take (the rest is alignment padding). */
  readonly tensors: number;
  readonly tensorBytes: number;
}

export interface OnnxModelSummary {
  readonly path: string;
  readonly fileBytes: number;
  readonly irVersion: number;
  readonly producer: { readonly name: string; readonly version: string };
  readonly opsets: readonly { readonly domain: string; readonly version: number }[];
  /** Graph inputs, without those that are also initializers (inputs with a default, which onnxruntime hides). */
  readonly inputs: readonly OnnxValueSummary[];
  readonly outputs: readonly OnnxValueSummary[];
  /** The main graph's nodes (subgraphs are validated but not listed). */
  readonly nodes: readonly OnnxNodeSummary[];
  /** Node count per op type, by domain then op type. */
  readonly ops: readonly { readonly domain: string; readonly opType: string; readonly count: number }[];
  /** The main graph's initializers, in file order. */
  readonly initializers: readonly OnnxTensorSummary[];
  readonly dataFiles: readonly OnnxDataFileSummary[];
  readonly metadata: Readonly<Record<string, string>>;
  /** Things that load but deserve a look: tensors of data types polyquant does not size, whose lengths were not checked. */
  readonly warnings: readonly string[];
}

/** Reads, decodes and validates one .onnx file and the external data it names (see the module comment). */
export async function readOnnxModel(path: string): Promise<OnnxModelSummary> {
  const file = resolve(path);
  const bytes = await withFile(file, async (handle) => {
    if (handle.size > MAX_ONNX_MODEL_BYTES) {
      throw new PolyquantError(ERROR_CODES.LIMIT, `the model is ${handle.size} bytes; protobuf reads at most ${MAX_ONNX_MODEL_BYTES} bytes in one message`, {
        file,
        hint: 'store the initializers in external data (.onnx_data) so that the graph stays small',
      });
    }
    return handle.read(0, handle.size);
  });
  return readOnnxModelBytes(file, bytes);
}

/**
 * Validates an ONNX model's external data as onnxruntime will need it, before a session is created: every
 * check of readOnnxModel, throwing its typed errors. Returns the summary for callers that want the I/O.
 */
export async function checkOnnxExternalData(path: string): Promise<OnnxModelSummary> {
  return readOnnxModel(path);
}

/**
 * The same as readOnnxModel over bytes already in memory; external data files are looked up beside `path`.
 * (Used by the fuzz test, which mutates one model many times.)
 */
export async function readOnnxModelBytes(path: string, bytes: Uint8Array): Promise<OnnxModelSummary> {
  const file = resolve(path);
  let model: ReturnType<typeof decodeModel>;
  try {
    model = decodeModel(bytes);
  } catch (error) {
    throw decodeFailure(file, error);
  }
  try {
    return await summarise(file, bytes.length, model);
  } catch (error) {
    // A structure protobufjs accepted but our walk tripped over (a missing message, an odd array) is still bad bytes.
    throw decodeFailure(file, error);
  }
}

function decodeFailure(file: string, error: unknown): PolyquantError {
  if (error instanceof PolyquantError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new PolyquantError(ERROR_CODES.MALFORMED, `not a valid ONNX model: ${reason}`, {
    file,
    cause: error,
    hint: 'the file is truncated, damaged or not an ONNX ModelProto; export or download it again',
  });
}

// ======================================================================================= integers

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A protobufjs int64 (number, or Long from the `long` package) as a bigint. */
function int64Value(value: unknown): bigint | undefined {
  if (typeof value === 'number') return Number.isInteger(value) ? BigInt(value) : undefined;
  if (typeof value === 'object' && value !== null && 'low' in value && 'high' in value) {
    const { low, high, unsigned } = value as { low: unknown; high: unknown; unsigned?: unknown };
    if (typeof low !== 'number' || typeof high !== 'number') return undefined;
    const bits = (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0);
    return unsigned === true ? bits : BigInt.asIntN(64, bits);
  }
  return undefined;
}

/** An int64 as a number when it is a safe integer, else undefined. */
function safeInt64(value: unknown): number | undefined {
  const big = int64Value(value ?? 0);
  return big !== undefined && big >= MIN_SAFE && big <= MAX_SAFE ? Number(big) : undefined;
}

/** An int64 for reports: a number when safe, else its decimal string (INT64_MAX is a common attribute). */
function reportedInt64(value: unknown): number | string {
  const safe = safeInt64(value);
  if (safe !== undefined) return safe;
  return String(int64Value(value) ?? 'invalid');
}

/** Decimal digits only, as onnx writes `offset` and `length` (no sign, no exponent, no hex). */
const DECIMAL = /^\d+$/;

// ======================================================================================== tensors

/** The size rows of the data types polyquant knows (proto.ts), by id. */
function typeRow(id: number): { name: OnnxDataTypeName; bytes: number } | undefined {
  const name = ONNX_DATA_TYPE_BY_ID.get(id);
  return name === undefined ? undefined : { name, bytes: ONNX_DATA_TYPES[name].bytes };
}

export function onnxDataTypeName(id: number): string {
  return ONNX_DATA_TYPE_BY_ID.get(id) ?? `DATA_TYPE_${id}`;
}

/**
 * Values stored in TensorProto's typed fields instead of raw_data (onnx.proto's comments on each field):
 * float_data for FLOAT; int32_data for the 8/16-bit types, BOOL and the 16-bit floats (one per int32);
 * int64_data for INT64; double_data for DOUBLE.
 */
function typedValueCount(tensor: TensorProto, name: OnnxDataTypeName): number {
  switch (name) {
    case 'FLOAT':
      return tensor.floatData?.length ?? 0;
    case 'INT64':
      return tensor.int64Data?.length ?? 0;
    case 'DOUBLE':
      return tensor.doubleData?.length ?? 0;
    default:
      return tensor.int32Data?.length ?? 0;
  }
}

interface Context {
  readonly file: string;
  readonly folder: string;
  /** Data files by location: path, size, and what is stored in them. */
  readonly dataFiles: Map<string, { path: string; bytes: number; tensors: number; tensorBytes: number }>;
  readonly warnings: string[];
}

/** Validates one stored tensor and returns its summary. `where` says where it sits when it is not a main-graph initializer. */
async function checkTensor(context: Context, tensor: TensorProto, where: string): Promise<OnnxTensorSummary> {
  const { file } = context;
  const name = tensor.name ?? '';
  const label = name === '' ? `an unnamed tensor (${where})` : name;
  const bad = (detail: string, hint?: string): PolyquantError => new PolyquantError(ERROR_CODES.MALFORMED, detail, { file, tensor: label, hint });

  const dataTypeId = tensor.dataType ?? 0;
  if (dataTypeId === 0) throw bad('the tensor has no data type (TensorProto.data_type is UNDEFINED)');
  const dims: number[] = [];
  let elements = 1n;
  for (const raw of tensor.dims ?? []) {
    const dim = safeInt64(raw);
    if (dim === undefined || dim < 0) throw bad(`dimension ${String(int64Value(raw) ?? raw)} is not a non-negative safe integer`);
    dims.push(dim);
    elements *= BigInt(dim);
  }
  const row = typeRow(dataTypeId);
  // Sub-byte and exotic types (INT4, FLOAT8, STRING …) have no row: their length is what is stored.
  const expected = row === undefined ? undefined : elements * BigInt(row.bytes);
  if (elements > MAX_SAFE || (expected !== undefined && expected > MAX_SAFE)) {
    throw bad(`[${dims.join(', ')}] is ${elements} elements, past what polyquant can address (2^53 bytes)`);
  }
  const dataType = onnxDataTypeName(dataTypeId);
  const external = tensor.externalData ?? [];
  if (tensor.dataLocation === EXTERNAL) {
    if ((tensor.rawData?.length ?? 0) > 0) throw bad('the tensor stores its data both inline (raw_data) and in external data');
    const range = await checkExternal(context, tensor, label, expected === undefined ? undefined : Number(expected));
    if (row === undefined) context.warnings.push(`${label}: data type ${dataType} has no size in polyquant's table; its external length ${range.length} was not checked`);
    return { name, dataType, dataTypeId, dims, elements: Number(elements), bytes: range.length, storage: range };
  }
  if ((tensor.dataLocation ?? 0) !== 0) throw bad(`data_location ${tensor.dataLocation} is neither DEFAULT (0) nor EXTERNAL (1)`);
  if (external.length > 0) throw bad('the tensor has external_data entries but data_location is not EXTERNAL (onnxruntime would ignore them)');
  const raw = tensor.rawData?.length ?? 0;
  if (row === undefined) {
    if (raw === 0 && elements > 0n) context.warnings.push(`${label}: data type ${dataType} stored in typed fields; its length was not checked`);
    return { name, dataType, dataTypeId, dims, elements: Number(elements), bytes: raw, storage: 'inline' };
  }
  const bytes = Number(expected);
  if (raw > 0) {
    if (raw !== bytes) throw bad(`raw_data holds ${raw} bytes, but ${dataType} [${dims.join(', ')}] is ${bytes} bytes`);
  } else {
    const values = typedValueCount(tensor, row.name);
    if (values !== Number(elements)) {
      throw bad(`${values === 0 ? 'no data is stored' : `${values} values are stored`}, but ${dataType} [${dims.join(', ')}] has ${elements} elements`);
    }
  }
  return { name, dataType, dataTypeId, dims, elements: Number(elements), bytes, storage: 'inline' };
}

/** C0 controls (NUL included), DEL and C1 controls. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;

/** True for a location onnxruntime would resolve outside the model's folder. */
function escapesFolder(location: string): 'absolute' | 'parent' | undefined {
  if (location.startsWith('/') || location.startsWith('\\') || /^[A-Za-z]:/.test(location)) return 'absolute';
  return location.split(/[\\/]/).includes('..') ? 'parent' : undefined;
}

async function checkExternal(context: Context, tensor: TensorProto, label: string, expected: number | undefined): Promise<OnnxExternalRange> {
  const { file } = context;
  const bad = (detail: string, hint?: string): PolyquantError => new PolyquantError(ERROR_CODES.MALFORMED, detail, { file, tensor: label, hint });
  const entries = new Map<string, string>();
  for (const entry of tensor.externalData ?? []) {
    const key = entry.key ?? '';
    if (entries.has(key)) throw bad(`external_data names "${key}" twice`);
    entries.set(key, entry.value ?? '');
  }
  const location = entries.get('location');
  if (location === undefined || location === '') throw bad('the tensor is stored externally but external_data has no location');
  // No file name we write or onnxruntime's exporters write has them, and echoed into a message they could drive the terminal.
  if (CONTROL_CHARACTERS.test(location)) throw bad(`external data location ${JSON.stringify(location)} contains control characters`);
  const escaping = escapesFolder(location);
  if (escaping !== undefined) {
    throw new PolyquantError(
      ERROR_CODES.UNSAFE,
      `external data location ${JSON.stringify(location)} ${escaping === 'absolute' ? 'is an absolute path' : 'climbs out of the model folder with ".."'}`,
      { file, tensor: label, hint: 'onnxruntime reads external data only from beside the model: a location must be a relative name without ".."' },
    );
  }
  const number = (key: 'offset' | 'length'): number | undefined => {
    const text = entries.get(key);
    if (text === undefined) return undefined;
    const value = DECIMAL.test(text) ? Number(text) : Number.NaN;
    if (!Number.isSafeInteger(value)) throw bad(`external data ${key} ${JSON.stringify(text)} is not a non-negative decimal safe integer`);
    return value;
  };
  const offset = number('offset') ?? 0;
  const statedLength = number('length');

  const dataFile = await dataFileOf(context, location, label);
  // Without a length, onnxruntime reads the tensor's own size (and onnx reads to the end of the file).
  const length = statedLength ?? expected ?? dataFile.bytes - offset;
  if (offset + length > dataFile.bytes) {
    throw new PolyquantError(
      ERROR_CODES.MALFORMED,
      `external data range ${offset}..${offset + length} runs past the end of ${location} (${dataFile.bytes} bytes)`,
      { file: dataFile.path, tensor: label, hint: `the data file is truncated or does not belong to ${basename(file)}` },
    );
  }
  if (expected !== undefined && length !== expected) {
    throw bad(`external data length ${length} differs from the tensor's ${expected} bytes (${onnxDataTypeName(tensor.dataType ?? 0)} [${(tensor.dims ?? []).map((dim) => String(int64Value(dim))).join(', ')}])`);
  }
  dataFile.tensors += 1;
  dataFile.tensorBytes += length;
  return { location, offset, length };
}

async function dataFileOf(context: Context, location: string, label: string): Promise<{ path: string; bytes: number; tensors: number; tensorBytes: number }> {
  const known = context.dataFiles.get(location);
  if (known !== undefined) return known;
  const path = join(context.folder, location);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') {
      throw new PolyquantError(ERROR_CODES.NOT_FOUND, `external data file ${JSON.stringify(location)} named by ${basename(context.file)} does not exist`, {
        file: path,
        tensor: label,
        hint: `onnxruntime looks for it beside ${basename(context.file)}; copy the model's .onnx_data files along with it`,
      });
    }
    throw ioError(path, 'stat the external data file', error);
  }
  if (!info.isFile()) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, `external data location ${JSON.stringify(location)} is a ${fileKind(info)}, not a data file`, {
      file: path,
      tensor: label,
    });
  }
  const entry = { path, bytes: info.size, tensors: 0, tensorBytes: 0 };
  context.dataFiles.set(location, entry);
  return entry;
}

// ======================================================================================== the walk

function valueSummary(info: ValueInfoProto): OnnxValueSummary {
  const type = info.type;
  const tensorType = type?.tensorType;
  if (tensorType === undefined || tensorType === null) {
    const kind = type?.sequenceType ? 'sequence' : type?.mapType ? 'map' : type?.optionalType ? 'optional' : type?.sparseTensorType ? 'sparse-tensor' : 'unknown';
    return { name: info.name ?? '', elemType: kind, dims: [] };
  }
  const dims: OnnxDim[] = (tensorType.shape?.dim ?? []).map((dim) => {
    if (dim.dimParam) return dim.dimParam;
    if (dim.dimValue === undefined || dim.dimValue === null) return null;
    const value = safeInt64(dim.dimValue);
    return value === undefined ? null : value;
  });
  return { name: info.name ?? '', elemType: onnxDataTypeName(tensorType.elemType ?? 0), dims };
}

const ATTRIBUTE_TYPE = onnx.AttributeProto.AttributeType;
const UTF8 = new TextDecoder();

function attributeValue(attribute: NonNullable<NodeProto['attribute']>[number]): OnnxAttributeValue {
  switch (attribute.type) {
    case ATTRIBUTE_TYPE.FLOAT:
      return attribute.f ?? 0;
    case ATTRIBUTE_TYPE.INT:
      return reportedInt64(attribute.i);
    case ATTRIBUTE_TYPE.STRING:
      return UTF8.decode(attribute.s ?? new Uint8Array());
    case ATTRIBUTE_TYPE.FLOATS:
      return [...(attribute.floats ?? [])];
    case ATTRIBUTE_TYPE.INTS:
      return (attribute.ints ?? []).map(reportedInt64);
    case ATTRIBUTE_TYPE.STRINGS:
      return (attribute.strings ?? []).map((value) => UTF8.decode(value));
    case ATTRIBUTE_TYPE.TENSOR:
      return { kind: 'tensor' };
    case ATTRIBUTE_TYPE.GRAPH:
      return { kind: 'graph' };
    case ATTRIBUTE_TYPE.SPARSE_TENSOR:
      return { kind: 'sparse-tensor' };
    case ATTRIBUTE_TYPE.TENSORS:
      return { kind: 'tensors' };
    case ATTRIBUTE_TYPE.GRAPHS:
      return { kind: 'graphs' };
    case ATTRIBUTE_TYPE.SPARSE_TENSORS:
      return { kind: 'sparse-tensors' };
    default:
      // Older writers leave `type` unset: report whichever scalar field is filled.
      if (attribute.s && attribute.s.length > 0) return UTF8.decode(attribute.s);
      if (attribute.ints && attribute.ints.length > 0) return attribute.ints.map(reportedInt64);
      if (attribute.i !== undefined && attribute.i !== null) return reportedInt64(attribute.i);
      return attribute.f ?? 0;
  }
}

function nodeSummary(node: NodeProto): OnnxNodeSummary {
  const attributes: Record<string, OnnxAttributeValue> = {};
  for (const attribute of node.attribute ?? []) attributes[attribute.name ?? ''] = attributeValue(attribute);
  return {
    name: node.name ?? '',
    opType: node.opType ?? '',
    domain: node.domain ? node.domain : DEFAULT_DOMAIN,
    inputs: [...(node.input ?? [])],
    outputs: [...(node.output ?? [])],
    attributes,
  };
}

/** Checks every tensor stored in a node's attributes and in its subgraphs. */
async function checkNodes(context: Context, nodes: readonly NodeProto[], where: string, depth: number): Promise<void> {
  for (const node of nodes) {
    const at = `${where}, node ${JSON.stringify(node.name ?? '')} (${node.opType ?? ''})`;
    for (const attribute of node.attribute ?? []) {
      const tensors = [...(attribute.t ? [attribute.t] : []), ...(attribute.tensors ?? [])];
      for (const tensor of tensors) await checkTensor(context, tensor, `attribute ${attribute.name ?? ''} of ${at}`);
      for (const sparse of [...(attribute.sparseTensor ? [attribute.sparseTensor] : []), ...(attribute.sparseTensors ?? [])]) {
        if (sparse.values) await checkTensor(context, sparse.values, `sparse values of ${at}`);
        if (sparse.indices) await checkTensor(context, sparse.indices, `sparse indices of ${at}`);
      }
      for (const graph of [...(attribute.g ? [attribute.g] : []), ...(attribute.graphs ?? [])]) {
        await checkGraph(context, graph, `subgraph ${attribute.name ?? ''} of ${at}`, depth + 1);
      }
    }
  }
}

/** Checks a (sub)graph's stored tensors; returns the summaries of its initializers. */
async function checkGraph(context: Context, graph: GraphProto, where: string, depth: number): Promise<OnnxTensorSummary[]> {
  if (depth > MAX_GRAPH_NESTING) {
    throw new PolyquantError(ERROR_CODES.LIMIT, `subgraphs nest more than ${MAX_GRAPH_NESTING} deep (${where})`, { file: context.file });
  }
  const initializers: OnnxTensorSummary[] = [];
  for (const tensor of graph.initializer ?? []) initializers.push(await checkTensor(context, tensor, `initializer of ${where}`));
  for (const sparse of graph.sparseInitializer ?? []) {
    if (sparse.values) await checkTensor(context, sparse.values, `sparse initializer values of ${where}`);
    if (sparse.indices) await checkTensor(context, sparse.indices, `sparse initializer indices of ${where}`);
  }
  await checkNodes(context, graph.node ?? [], where, depth);
  return initializers;
}

async function summarise(file: string, fileBytes: number, model: ReturnType<typeof decodeModel>): Promise<OnnxModelSummary> {
  const bad = (detail: string, hint?: string): PolyquantError => new PolyquantError(ERROR_CODES.MALFORMED, detail, { file, hint });
  const irVersion = safeInt64(model.irVersion);
  if (irVersion === undefined || irVersion <= 0) {
    throw bad(`ir_version ${reportedInt64(model.irVersion)} is not a positive integer; every ONNX model declares the IR version it was written for`, 'is this an ONNX model?');
  }
  const opsets: { domain: string; version: number }[] = [];
  for (const opset of model.opsetImport ?? []) {
    const version = safeInt64(opset.version);
    if (version === undefined || version < 0) throw bad(`opset version ${reportedInt64(opset.version)} of domain "${opset.domain ?? ''}" is not a non-negative integer`);
    opsets.push({ domain: opset.domain ? opset.domain : DEFAULT_DOMAIN, version });
  }
  if (opsets.length === 0) throw bad('the model imports no opset; onnxruntime needs at least the default domain\'s', 'is this an ONNX model?');
  const graph = model.graph;
  if (graph === undefined || graph === null) throw bad('the model has no graph');

  const context: Context = { file, folder: dirname(file), dataFiles: new Map(), warnings: [] };
  const initializers = await checkGraph(context, graph, 'the main graph', 0);
  for (const [index, fn] of (model.functions ?? []).entries()) await checkNodes(context, fn.node ?? [], `function ${fn.name ?? index}`, 1);

  const initializerNames = new Set(initializers.map((tensor) => tensor.name));
  const nodes = (graph.node ?? []).map(nodeSummary);
  const counts = new Map<string, { domain: string; opType: string; count: number }>();
  for (const node of nodes) {
    const key = `${node.domain}\0${node.opType}`;
    const entry = counts.get(key) ?? { domain: node.domain, opType: node.opType, count: 0 };
    entry.count += 1;
    counts.set(key, entry);
  }
  const ops = [...counts.values()].sort((a, b) => (a.domain === b.domain ? a.opType.localeCompare(b.opType) : a.domain === DEFAULT_DOMAIN ? -1 : b.domain === DEFAULT_DOMAIN ? 1 : a.domain.localeCompare(b.domain)));
  const metadata: Record<string, string> = {};
  for (const entry of model.metadataProps ?? []) metadata[entry.key ?? ''] = entry.value ?? '';
  return {
    path: file,
    fileBytes,
    irVersion,
    producer: { name: model.producerName ?? '', version: model.producerVersion ?? '' },
    opsets,
    inputs: (graph.input ?? []).filter((input) => !initializerNames.has(input.name ?? '')).map(valueSummary),
    outputs: (graph.output ?? []).map(valueSummary),
    nodes,
    ops,
    initializers,
    dataFiles: [...context.dataFiles].map(([location, entry]) => ({ location, ...entry })),
    metadata,
    warnings: context.warnings,
  };
}

// ================================================================================ finding models

export interface OnnxModelFile {
  /** Absolute path of the .onnx file. */
  readonly path: string;
  /** Its name: `model_q4.onnx`. */
  readonly name: string;
  /** The export type its name stands for (`model_q4.onnx` → q4), when it is one of transformers.js' names. */
  readonly type: OnnxTypeName | undefined;
}

/** The `.onnx` files directly inside `dir` (regular files, symlinks followed as in an HF cache), known types first in table order. */
export async function listOnnxFiles(dir: string): Promise<OnnxModelFile[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw ioError(dir, 'list the folder', error);
  }
  const models: OnnxModelFile[] = [];
  for (const name of names.filter((entry) => entry.toLowerCase().endsWith('.onnx')).sort()) {
    const path = join(dir, name);
    const info = await stat(path).catch(() => undefined);
    if (info?.isFile()) models.push({ path, name, type: onnxTypeOfFile(name) });
  }
  const rank = (model: OnnxModelFile): number => (model.type === undefined ? ONNX_TYPE_NAMES.length : ONNX_TYPE_NAMES.indexOf(model.type));
  return models.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
}

/** The `onnx/*.onnx` model files of a transformers.js-style folder (none when it has no onnx/ subfolder). */
export async function findOnnxModels(folder: string): Promise<OnnxModelFile[]> {
  return listOnnxFiles(join(resolve(folder), ONNX_SUBFOLDER));
}
