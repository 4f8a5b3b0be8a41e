/**
 * The few ONNX protobuf shapes polyquant writes and reads, over onnx-proto's generated protobufjs code
 * (onnx/onnx.proto as of ONNX 1.10; specs/onnx.md §5). That schema predates IR 10, but the fields we need
 * beyond it are plain integers on the wire: data types INT4/UINT4 and IR version 10 are written as numbers.
 * Every initializer lives in external data (specs/onnx.md §4), so the encoded model is kilobytes and
 * protobufjs' whole-buffer encoding costs nothing.
 */
import onnxProto from 'onnx-proto';

export const { onnx } = onnxProto;
export type ModelProto = onnxProto.onnx.IModelProto;
export type GraphProto = onnxProto.onnx.IGraphProto;
export type NodeProto = onnxProto.onnx.INodeProto;
export type TensorProto = onnxProto.onnx.ITensorProto;
export type ValueInfoProto = onnxProto.onnx.IValueInfoProto;
export type AttributeProto = onnxProto.onnx.IAttributeProto;

/** TensorProto.DataType ids (onnx.proto), the ones polyquant writes or reports. */
export const ONNX_DATA_TYPES = {
  FLOAT: { id: 1, bytes: 4 },
  UINT8: { id: 2, bytes: 1 },
  INT8: { id: 3, bytes: 1 },
  INT32: { id: 6, bytes: 4 },
  INT64: { id: 7, bytes: 8 },
  BOOL: { id: 9, bytes: 1 },
  FLOAT16: { id: 10, bytes: 2 },
  DOUBLE: { id: 11, bytes: 8 },
  BFLOAT16: { id: 16, bytes: 2 },
} as const;
export type OnnxDataTypeName = keyof typeof ONNX_DATA_TYPES;
export const ONNX_DATA_TYPE_BY_ID: ReadonlyMap<number, OnnxDataTypeName> = new Map(
  (Object.keys(ONNX_DATA_TYPES) as OnnxDataTypeName[]).map((name) => [ONNX_DATA_TYPES[name].id, name]),
);

/** IR 10 (2024): the version ORT 1.30 and the GenAI builder write with opset 21 (specs/onnx.md §1.2, §4). */
export const IR_VERSION = 10;
export const MICROSOFT_DOMAIN = 'com.microsoft';

/** A dimension: a number, or a symbolic name (transformers.js resolves only `batch_size`; specs/onnx.md §3.3). */
export type Dim = number | string;

export function valueInfo(name: string, type: OnnxDataTypeName, dims: readonly Dim[]): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ONNX_DATA_TYPES[type].id,
        shape: { dim: dims.map((dim) => (typeof dim === 'number' ? { dimValue: dim } : { dimParam: dim })) },
      },
    },
  };
}

export type AttributeValue = { int: number } | { float: number } | { ints: readonly number[] } | { string: string } | { tensor: TensorProto };

const ATTRIBUTE_TYPE = onnx.AttributeProto.AttributeType;

function attribute(name: string, value: AttributeValue): AttributeProto {
  if ('int' in value) return { name, type: ATTRIBUTE_TYPE.INT, i: value.int };
  if ('float' in value) return { name, type: ATTRIBUTE_TYPE.FLOAT, f: value.float };
  if ('ints' in value) return { name, type: ATTRIBUTE_TYPE.INTS, ints: [...value.ints] };
  if ('string' in value) return { name, type: ATTRIBUTE_TYPE.STRING, s: new TextEncoder().encode(value.string) };
  return { name, type: ATTRIBUTE_TYPE.TENSOR, t: value.tensor };
}

export function makeNode(
  opType: string,
  inputs: readonly string[],
  outputs: readonly string[],
  name: string,
  attributes: Readonly<Record<string, AttributeValue>> = {},
  domain = '',
): NodeProto {
  return {
    opType,
    input: [...inputs],
    output: [...outputs],
    name,
    ...(domain !== '' && { domain }),
    attribute: Object.entries(attributes).map(([key, value]) => attribute(key, value)),
  };
}

/** A small tensor stored in the model itself (shapes, axes, scalars). */
export function inlineTensor(name: string, type: OnnxDataTypeName, dims: readonly number[], bytes: Uint8Array): TensorProto {
  return { name, dataType: ONNX_DATA_TYPES[type].id, dims: [...dims], rawData: bytes };
}

export interface ExternalLocation {
  /** File name relative to the .onnx file's folder. */
  readonly location: string;
  readonly offset: number;
  readonly length: number;
}

/** An initializer whose bytes are in an external data file (TensorProto.data_location EXTERNAL). */
export function externalTensor(name: string, dataType: number, dims: readonly number[], where: ExternalLocation): TensorProto {
  return {
    name,
    dataType,
    dims: [...dims],
    dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [
      { key: 'location', value: where.location },
      { key: 'offset', value: String(where.offset) },
      { key: 'length', value: String(where.length) },
    ],
  };
}

export function encodeModel(model: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}

export function decodeModel(bytes: Uint8Array): onnxProto.onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}

/** A protobufjs int64 (number or Long) as a number (every value polyquant reads fits a safe integer or is refused by the caller). */
export function int64(value: number | { toNumber(): number } | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}
