/**
 * The GPT-NeoX decoder as an ONNX graph with a KV cache (specs/onnx.md §6), in two attention forms:
 *
 * - `plain` (default): opset-21 ops only — Gather, LayerNormalization, MatMul, the NeoX rotate-half on the
 *   first rotary dims, an additive causal + padding mask, Softmax, Concat-grown KV cache. Exact for left
 *   padding, so transformers.js' batched generate works (§1.6, run I).
 * - `gqa`: com.microsoft GroupQueryAttention on the packed QKV with rotary inside (do_rotary, partial
 *   rotary through the cos/sin cache width), as onnxruntime-genai and GPU EPs want it; no position_ids
 *   input; positions come from the mask, so right padding only.
 *
 * The graph only declares its weights (`WeightJob`s: which checkpoint tensor, which encoding, which
 * initializer names and shapes); the converter streams their bytes into external data. Nothing here reads
 * a tensor. The I/O contract is transformers.js' (§3.3): `input_ids`, `attention_mask`, `position_ids`
 * (plain only), `past_key_values.{i}.key|value` → `logits`, `present.{i}.key|value`, batch dims named
 * `batch_size`, head count and head size numeric. Boundary tensors are float32 in the plain form whatever
 * the inside (transformers.js' keep_io_types recipe for fp16/q4f16), and the activation dtype in the GQA
 * form (GenAI shares the past/present buffers, so no Cast may sit between them); logits are float32.
 */
import { type NeoXConfig, type NeoXTensorRole, rotaryTables } from '../../arch/gpt-neox.js';
import { type MatMulNBitsLayout, matMulIntegerLayout, matMulNBitsLayout, matMulNBitsShapes } from '../../quant/onnx-layouts.js';
import { f32ToF16 } from '../../tensor/float.js';
import {
  type AttributeValue,
  type Dim,
  inlineTensor,
  MICROSOFT_DOMAIN,
  makeNode,
  type NodeProto,
  ONNX_DATA_TYPES,
  type OnnxDataTypeName,
  type TensorProto,
  type ValueInfoProto,
  valueInfo,
} from './proto.js';
import { type LinearFormat, ONNX_TYPES, type OnnxTypeName } from './types.js';

export type AttentionForm = 'plain' | 'gqa';
export const ATTENTION_FORMS: readonly AttentionForm[] = ['plain', 'gqa'];

export interface GraphOptions {
  readonly type: OnnxTypeName;
  readonly attention: AttentionForm;
  /** MatMulNBits block size along K (default 32). */
  readonly blockSize: 16 | 32 | 64 | 128;
  /** MatMulNBits without zero points (default true). */
  readonly symmetric: boolean;
  /** MatMulNBits accuracy_level: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations (default 4). */
  readonly accuracyLevel: 0 | 1 | 2 | 3 | 4;
  /** Keep the output head in the activation dtype instead of quantizing it like the linears. */
  readonly keepHead: boolean;
  /** q8's weight format: dynamic int8 (MatMulInteger) or MatMulNBits bits=8. */
  readonly q8Format: 'integer' | 'nbits';
}

/** How one checkpoint tensor becomes initializer bytes. */
export type WeightEncoding =
  /** Widened and stored as float32/float16, in the checkpoint's layout or transposed (W^T for MatMul). */
  | { readonly kind: 'float'; readonly type: 'FLOAT' | 'FLOAT16'; readonly transpose: boolean }
  /** MatMulNBits B, scales (and zero points), by the quantizer pool in row chunks. */
  | { readonly kind: 'nbits'; readonly layout: MatMulNBitsLayout }
  /** MatMulInteger B `[K, N]` (transposed), per-channel scales and zero points, by the pool in row chunks. */
  | { readonly kind: 'integer'; readonly layoutId: string };

export interface InitializerSpec {
  readonly name: string;
  readonly dataType: number;
  readonly dims: readonly number[];
  readonly bytes: number;
}

export interface WeightJob {
  /** The checkpoint tensor's role and layer (null: whole-model tensor). */
  readonly role: NeoXTensorRole;
  readonly layer: number | null;
  /** `[rows, columns]` of the checkpoint tensor (1-D tensors: `[n]`). */
  readonly shape: readonly number[];
  /** Reorder fused QKV rows from NeoX's per-head interleave to [Q; K; V] (specs/onnx.md §6.1). */
  readonly qkv: boolean;
  readonly encoding: WeightEncoding;
  /** The initializers it produces, in the order the encoding packs them. */
  readonly initializers: readonly InitializerSpec[];
}

/** A computed float table (rotary cos/sin), written to external data like the weights. */
export interface ComputedJob {
  readonly initializer: InitializerSpec;
  readonly values: () => Uint8Array;
}

export interface NeoXGraph {
  readonly nodes: NodeProto[];
  readonly inputs: ValueInfoProto[];
  readonly outputs: ValueInfoProto[];
  /** Small constants stored in the model (shapes, axes, scalars). */
  readonly inlineInitializers: TensorProto[];
  readonly weights: WeightJob[];
  readonly computed: ComputedJob[];
  /** Opset imports. */
  readonly opsets: ReadonlyArray<{ readonly domain: string; readonly version: number }>;
}

const FLOAT_BYTES = { FLOAT: 4, FLOAT16: 2 } as const;

/** Bytes of `values` in `type` (float32 or float16 bits, little-endian). */
export function floatBytes(values: Float32Array | readonly number[], type: 'FLOAT' | 'FLOAT16'): Uint8Array {
  if (type === 'FLOAT') {
    const array = values instanceof Float32Array ? values : Float32Array.from(values);
    return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  }
  const halves = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) halves[i] = f32ToF16(values[i] as number);
  return new Uint8Array(halves.buffer);
}

class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly inlineInitializers: TensorProto[] = [];
  private readonly constants = new Map<string, string>();

  /** Adds a node named `name`; its outputs are `name/output_i`. */
  op(opType: string, inputs: readonly string[], name: string, attributes: Readonly<Record<string, AttributeValue>> = {}, outputs = 1, domain = ''): string[] {
    const names = Array.from({ length: outputs }, (_, index) => `${name}/output_${index}`);
    this.nodes.push(makeNode(opType, inputs, names, name, attributes, domain));
    return names;
  }

  one(opType: string, inputs: readonly string[], name: string, attributes: Readonly<Record<string, AttributeValue>> = {}, domain = ''): string {
    return this.op(opType, inputs, name, attributes, 1, domain)[0] as string;
  }

  /** Adds a node whose single output has a fixed name (graph outputs). */
  named(opType: string, inputs: readonly string[], name: string, output: string, attributes: Readonly<Record<string, AttributeValue>> = {}, domain = ''): string {
    this.nodes.push(makeNode(opType, inputs, [output], name, attributes, domain));
    return output;
  }

  /** An int64 constant (shapes, axes, slice bounds), shared by value. */
  int64s(values: readonly number[], scalar = false): string {
    const key = `i64:${scalar ? 's' : 'v'}:${values.join(',')}`;
    const existing = this.constants.get(key);
    if (existing !== undefined) return existing;
    const name = `/model/constants/INT64/${scalar ? 'scalar' : 'vector'}/${values.join('_').replace(/-/g, 'm')}`;
    const bytes = new Uint8Array(new BigInt64Array(values.map((value) => BigInt(value))).buffer);
    this.inlineInitializers.push(inlineTensor(name, 'INT64', scalar ? [] : [values.length], bytes));
    this.constants.set(key, name);
    return name;
  }

  /** A float scalar in the activation dtype. */
  scalar(value: number, type: 'FLOAT' | 'FLOAT16'): string {
    const key = `${type}:${value}`;
    const existing = this.constants.get(key);
    if (existing !== undefined) return existing;
    const name = `/model/constants/${type}/scalar/${String(value).replace(/-/g, 'm')}`;
    this.inlineInitializers.push(inlineTensor(name, type, [], floatBytes([value], type)));
    this.constants.set(key, name);
    return name;
  }
}

function layerPrefix(layer: number | null): string {
  return layer === null ? 'model' : `model.layers.${layer}`;
}

export function buildNeoXGraph(config: NeoXConfig, options: GraphOptions): NeoXGraph {
  const row = ONNX_TYPES[options.type];
  const act = row.activation;
  const actId = ONNX_DATA_TYPES[act].id;
  const gqa = options.attention === 'gqa';
  // The plain form keeps transformers.js' float32 boundary; GQA's cache must be the op's own dtype.
  const io: 'FLOAT' | 'FLOAT16' = gqa ? act : 'FLOAT';
  const b = new GraphBuilder();
  const weights: WeightJob[] = [];
  const computed: ComputedJob[] = [];
  const { hiddenSize: hidden, numHeads: heads, headDim, numLayers, vocabSize, intermediateSize } = config;
  const rotary = config.rotaryDims;
  const half = rotary / 2;

  const floatWeight = (role: NeoXTensorRole, layer: number | null, shape: readonly number[], name: string, transpose = false, qkv = false): string => {
    const dims = transpose ? [shape[1] as number, shape[0] as number] : [...shape];
    const count = dims.reduce((product, dim) => product * dim, 1);
    weights.push({
      role,
      layer,
      shape,
      qkv,
      encoding: { kind: 'float', type: act, transpose },
      initializers: [{ name, dataType: actId, dims, bytes: count * FLOAT_BYTES[act] }],
    });
    return name;
  };

  /** y = x·W^T (+ bias) in the weight format of `format`. */
  const linear = (x: string, role: NeoXTensorRole, layer: number | null, N: number, K: number, format: LinearFormat, module: string, bias?: NeoXTensorRole): string => {
    const base = `${layer === null ? '' : `${layerPrefix(layer)}.`}${module.replace('/', '.')}.MatMul.weight`;
    const node = `${layer === null ? '' : `/model/layers.${layer}`}/${module}`;
    const qkv = role === 'qkv-weight';
    let y: string;
    if (format === 'float') {
      const weight = floatWeight(role, layer, [N, K], base, true, qkv);
      y = b.one('MatMul', [x, weight], `${node}/MatMul`);
    } else if (format === 'nbits4' || format === 'nbits8') {
      const bits = format === 'nbits4' ? 4 : 8;
      const layout = matMulNBitsLayout({ bits, blockSize: options.blockSize, symmetric: options.symmetric, scaleType: row.scaleType }, K);
      const shapes = matMulNBitsShapes(layout, N, K);
      const scaleType = layout.scaleType === 'f16' ? ONNX_DATA_TYPES.FLOAT16 : ONNX_DATA_TYPES.FLOAT;
      const initializers: InitializerSpec[] = [
        { name: `${base}_Q${bits}`, dataType: ONNX_DATA_TYPES.UINT8.id, dims: shapes.B, bytes: shapes.B[0] * shapes.B[1] * shapes.B[2] },
        { name: `${base}_scales`, dataType: scaleType.id, dims: shapes.scales, bytes: shapes.scales[0] * scaleType.bytes },
      ];
      if (shapes.zeroPoints !== null) {
        initializers.push({ name: `${base}_zero_points`, dataType: ONNX_DATA_TYPES.UINT8.id, dims: shapes.zeroPoints, bytes: shapes.zeroPoints[0] });
      }
      weights.push({ role, layer, shape: [N, K], qkv, encoding: { kind: 'nbits', layout }, initializers });
      const attributes: Record<string, AttributeValue> = { K: { int: K }, N: { int: N }, bits: { int: bits }, block_size: { int: layout.blockSize } };
      if (options.accuracyLevel !== 0) attributes.accuracy_level = { int: options.accuracyLevel };
      y = b.one('MatMulNBits', initializers.map((spec) => spec.name), `${node}/MatMul_Q${bits}`, attributes, MICROSOFT_DOMAIN);
      // The node's first input is the activation.
      (b.nodes[b.nodes.length - 1] as NodeProto).input = [x, ...initializers.map((spec) => spec.name)];
    } else {
      const layout = matMulIntegerLayout({ weightType: 'int8', granularity: 'per-channel' });
      const initializers: InitializerSpec[] = [
        { name: `${base}_quantized`, dataType: ONNX_DATA_TYPES.INT8.id, dims: [K, N], bytes: K * N },
        { name: `${base}_scale`, dataType: ONNX_DATA_TYPES.FLOAT.id, dims: [N], bytes: N * 4 },
        { name: `${base}_zero_point`, dataType: ONNX_DATA_TYPES.INT8.id, dims: [N], bytes: N },
      ];
      weights.push({ role, layer, shape: [N, K], qkv, encoding: { kind: 'integer', layoutId: layout.id }, initializers });
      // quantize_dynamic's chain (specs/onnx.md §2.6), which ORT CPU fuses into DynamicQuantizeMatMul.
      const [xq, xs, xz] = b.op('DynamicQuantizeLinear', [x], `${node}/DynamicQuantizeLinear`, {}, 3) as [string, string, string];
      const product = b.one('MatMulInteger', [xq, initializers[0]!.name, xz, initializers[2]!.name], `${node}/MatMulInteger`);
      const widened = b.one('Cast', [product], `${node}/Cast`, { to: { int: ONNX_DATA_TYPES.FLOAT.id } });
      const scale = b.one('Mul', [xs, initializers[1]!.name], `${node}/ScaleMul`);
      y = b.one('Mul', [widened, scale], `${node}/Mul`);
    }
    if (bias === undefined || !config.attentionBias && (bias === 'qkv-bias' || bias === 'attn-output-bias')) return y;
    const biasName = floatWeight(bias, layer, [N], `${base.replace('.MatMul.weight', '.Add.bias')}`, false, qkv);
    return b.one('Add', [y, biasName], `${node}/Add`);
  };

  const layerNorm = (x: string, weightRole: NeoXTensorRole, biasRole: NeoXTensorRole, layer: number | null, module: string): string => {
    const prefix = layer === null ? 'model' : layerPrefix(layer);
    const weight = floatWeight(weightRole, layer, [hidden], `${prefix}.${module}.weight`);
    const bias = floatWeight(biasRole, layer, [hidden], `${prefix}.${module}.bias`);
    const node = `${layer === null ? '/model' : `/model/layers.${layer}`}/${module}/LayerNorm`;
    return b.one('LayerNormalization', [x, weight, bias], node, { axis: { int: -1 }, epsilon: { float: config.layerNormEps }, stash_type: { int: 1 } });
  };

  // ----------------------------------------------------------------------------------------- inputs
  const inputs: ValueInfoProto[] = [
    valueInfo('input_ids', 'INT64', ['batch_size', 'sequence_length']),
    valueInfo('attention_mask', 'INT64', ['batch_size', 'total_sequence_length']),
  ];
  if (!gqa) inputs.push(valueInfo('position_ids', 'INT64', ['batch_size', 'sequence_length']));
  const outputs: ValueInfoProto[] = [valueInfo('logits', 'FLOAT', ['batch_size', 'sequence_length', vocabSize])];
  for (let layer = 0; layer < numLayers; layer++) {
    for (const kind of ['key', 'value']) {
      inputs.push(valueInfo(`past_key_values.${layer}.${kind}`, io, ['batch_size', heads, 'past_sequence_length', headDim]));
      outputs.push(valueInfo(`present.${layer}.${kind}`, io, ['batch_size', heads, 'total_sequence_length', headDim]));
    }
  }

  // ------------------------------------------------------------------------------ rotary cos/sin caches
  // cos/sin[p, i] = cos/sin(p · base^(−2i/rotary)), i < rotary/2, rounded where GPTNeoXRotaryEmbedding
  // rounds (§6.1): the same tables the reference engine uses.
  const positions = config.maxPositionEmbeddings;
  const cacheName = (kind: 'cos' | 'sin') => `${kind}_cache`;
  for (const kind of ['cos', 'sin'] as const) {
    computed.push({
      initializer: { name: cacheName(kind), dataType: actId, dims: [positions, half], bytes: positions * half * FLOAT_BYTES[act] },
      values: () => floatBytes(rotaryTables(rotary, config.rotaryBase, positions)[kind], act),
    });
  }

  // ------------------------------------------------------------------------------------ shared preamble
  const embedding = floatWeight('token-embedding', null, [vocabSize, hidden], 'model.embed_tokens.weight');
  let x = b.one('Gather', [embedding, 'input_ids'], '/model/embed_tokens/Gather', { axis: { int: 0 } });
  const ctxScale = 1 / Math.sqrt(headDim);

  let maskBias = '';
  let cosB = '';
  let sinB = '';
  let seqlensK = '';
  let totalSeqLen = '';
  if (gqa) {
    // seqlens_k = Σ mask − 1 and the total length (GenAI's mask subgraph, §1.3 / §6.3).
    const sum = b.one('ReduceSum', ['attention_mask', b.int64s([1])], '/model/attn_mask_reformat/ReduceSum', { keepdims: { int: 0 } });
    const less = b.one('Sub', [sum, b.int64s([1], true)], '/model/attn_mask_reformat/Sub');
    seqlensK = b.one('Cast', [less], '/model/attn_mask_reformat/seqlens_k', { to: { int: ONNX_DATA_TYPES.INT32.id } });
    const shape = b.one('Shape', ['attention_mask'], '/model/attn_mask_reformat/Shape');
    const total = b.one('Gather', [shape, b.int64s([1], true)], '/model/attn_mask_reformat/Gather', { axis: { int: 0 } });
    totalSeqLen = b.one('Cast', [total], '/model/attn_mask_reformat/total_seq_len', { to: { int: ONNX_DATA_TYPES.INT32.id } });
  } else {
    // Additive mask [B, 1, S, T]: bottom-right causal and padding (§6.2); the lowest value of the dtype, as HF.
    const maskShape = b.one('Shape', ['attention_mask'], '/model/mask/Shape_T');
    const T = b.one('Gather', [maskShape, b.int64s([1], true)], '/model/mask/T', { axis: { int: 0 } });
    const idsShape = b.one('Shape', ['input_ids'], '/model/mask/Shape_S');
    const S = b.one('Gather', [idsShape, b.int64s([1], true)], '/model/mask/S', { axis: { int: 0 } });
    const P = b.one('Sub', [T, S], '/model/mask/P');
    const queryPositions = b.one('Range', [P, T, b.int64s([1], true)], '/model/mask/query_positions');
    const keyPositions = b.one('Range', [b.int64s([0], true), T, b.int64s([1], true)], '/model/mask/key_positions');
    const keys = b.one('Unsqueeze', [keyPositions, b.int64s([0])], '/model/mask/keys');
    const queries = b.one('Unsqueeze', [queryPositions, b.int64s([1])], '/model/mask/queries');
    const causal = b.one('LessOrEqual', [keys, queries], '/model/mask/causal');
    const padding = b.one('Cast', ['attention_mask'], '/model/mask/padding', { to: { int: ONNX_DATA_TYPES.BOOL.id } });
    const paddingB = b.one('Unsqueeze', [padding, b.int64s([1, 2])], '/model/mask/padding_4d');
    const allowed = b.one('And', [causal, paddingB], '/model/mask/allowed');
    const lowest = act === 'FLOAT' ? -3.4028234663852886e38 : -65504;
    maskBias = b.one('Where', [allowed, b.scalar(0, act), b.scalar(lowest, act)], '/model/mask/bias');
    for (const kind of ['cos', 'sin'] as const) {
      const gathered = b.one('Gather', [cacheName(kind), 'position_ids'], `/model/rotary/${kind}/Gather`, { axis: { int: 0 } });
      const expanded = b.one('Unsqueeze', [gathered, b.int64s([1])], `/model/rotary/${kind}/Unsqueeze`);
      if (kind === 'cos') cosB = expanded;
      else sinB = expanded;
    }
  }

  const fromIo = (name: string, node: string): string => (io === act ? name : b.one('Cast', [name], node, { to: { int: actId } }));
  const toIo = (value: string, node: string, output: string): void => {
    if (io === act) {
      // Rename the producing node's output to the graph output.
      renameOutput(b.nodes, value, output);
    } else {
      b.named('Cast', [value], node, output, { to: { int: ONNX_DATA_TYPES[io].id } });
    }
  };

  /** NeoX rotate-half on the first `rotary` dims of [B, H, S, D] (§6.2). */
  const rope = (t: string, node: string): string => {
    const t1 = b.one('Slice', [t, b.int64s([0]), b.int64s([half]), b.int64s([3])], `${node}/Slice_1`);
    const t2 = b.one('Slice', [t, b.int64s([half]), b.int64s([rotary]), b.int64s([3])], `${node}/Slice_2`);
    const r1 = b.one('Sub', [b.one('Mul', [t1, cosB], `${node}/Mul_1`), b.one('Mul', [t2, sinB], `${node}/Mul_2`)], `${node}/Sub`);
    const r2 = b.one('Add', [b.one('Mul', [t2, cosB], `${node}/Mul_3`), b.one('Mul', [t1, sinB], `${node}/Mul_4`)], `${node}/Add`);
    const parts = [r1, r2];
    if (rotary < headDim) parts.push(b.one('Slice', [t, b.int64s([rotary]), b.int64s([headDim]), b.int64s([3])], `${node}/Slice_pass`));
    return b.one('Concat', parts, `${node}/Concat`, { axis: { int: -1 } });
  };

  const heads4d = (t: string, node: string): string =>
    b.one('Transpose', [b.one('Reshape', [t, b.int64s([0, 0, heads, headDim])], `${node}/Reshape`)], `${node}/Transpose`, { perm: { ints: [0, 2, 1, 3] } });

  const format = row.linear === 'integer8' && options.q8Format === 'nbits' ? 'nbits8' : row.linear;

  for (let layer = 0; layer < numLayers; layer++) {
    const node = `/model/layers.${layer}`;
    const attnIn = layerNorm(x, 'attn-norm-weight', 'attn-norm-bias', layer, 'input_layernorm');
    const qkv = linear(attnIn, 'qkv-weight', layer, 3 * hidden, hidden, format, 'attn/qkv_proj', 'qkv-bias');
    const pastKey = fromIo(`past_key_values.${layer}.key`, `${node}/attn/past_key/Cast`);
    const pastValue = fromIo(`past_key_values.${layer}.value`, `${node}/attn/past_value/Cast`);
    let context: string;
    if (gqa) {
      const [out, presentKey, presentValue] = b.op(
        'GroupQueryAttention',
        [qkv, '', '', pastKey, pastValue, seqlensK, totalSeqLen, cacheName('cos'), cacheName('sin')],
        `${node}/attn/GroupQueryAttention`,
        { num_heads: { int: heads }, kv_num_heads: { int: heads }, scale: { float: ctxScale }, do_rotary: { int: 1 }, rotary_interleaved: { int: 0 }, local_window_size: { int: -1 } },
        3,
        MICROSOFT_DOMAIN,
      ) as [string, string, string];
      toIo(presentKey, `${node}/attn/present_key/Cast`, `present.${layer}.key`);
      toIo(presentValue, `${node}/attn/present_value/Cast`, `present.${layer}.value`);
      context = out;
    } else {
      const [q, k, v] = b.op('Split', [qkv, b.int64s([hidden, hidden, hidden])], `${node}/attn/Split`, { axis: { int: -1 } }, 3) as [string, string, string];
      const qRot = rope(heads4d(q, `${node}/attn/q`), `${node}/attn/q_rotary`);
      const kRot = rope(heads4d(k, `${node}/attn/k`), `${node}/attn/k_rotary`);
      const v4 = heads4d(v, `${node}/attn/v`);
      const keys = b.one('Concat', [pastKey, kRot], `${node}/attn/present_key/Concat`, { axis: { int: 2 } });
      const values = b.one('Concat', [pastValue, v4], `${node}/attn/present_value/Concat`, { axis: { int: 2 } });
      toIo(keys, `${node}/attn/present_key/Cast`, `present.${layer}.key`);
      toIo(values, `${node}/attn/present_value/Cast`, `present.${layer}.value`);
      const keysUsed = io === act ? `present.${layer}.key` : keys;
      const valuesUsed = io === act ? `present.${layer}.value` : values;
      const keysT = b.one('Transpose', [keysUsed], `${node}/attn/k_transpose`, { perm: { ints: [0, 1, 3, 2] } });
      const scores = b.one('Mul', [b.one('MatMul', [qRot, keysT], `${node}/attn/qk/MatMul`), b.scalar(ctxScale, act)], `${node}/attn/qk/Mul`);
      const probabilities = b.one('Softmax', [b.one('Add', [scores, maskBias], `${node}/attn/mask/Add`)], `${node}/attn/Softmax`, { axis: { int: -1 } });
      const weighted = b.one('MatMul', [probabilities, valuesUsed], `${node}/attn/pv/MatMul`);
      const merged = b.one('Transpose', [weighted], `${node}/attn/context/Transpose`, { perm: { ints: [0, 2, 1, 3] } });
      context = b.one('Reshape', [merged, b.int64s([0, 0, hidden])], `${node}/attn/context/Reshape`);
    }
    const attnOut = linear(context, 'attn-output-weight', layer, hidden, hidden, format, 'attn/o_proj', 'attn-output-bias');
    const mlp = (input: string): string => {
      const up = linear(input, 'ffn-up-weight', layer, intermediateSize, hidden, format, 'mlp/fc1', 'ffn-up-bias');
      const approximate = config.hiddenAct === 'gelu' ? 'none' : 'tanh';
      const activated = b.one('Gelu', [up], `${node}/mlp/act/Gelu`, { approximate: { string: approximate } });
      return linear(activated, 'ffn-down-weight', layer, hidden, intermediateSize, format, 'mlp/fc2', 'ffn-down-bias');
    };
    if (config.useParallelResidual) {
      // x + attn(ln1(x)) + mlp(ln2(x)) (GPTNeoXLayer.forward, use_parallel_residual).
      const mlpOut = mlp(layerNorm(x, 'ffn-norm-weight', 'ffn-norm-bias', layer, 'post_attention_layernorm'));
      x = b.one('Add', [x, b.one('Add', [attnOut, mlpOut], `${node}/residual/Add_branches`)], `${node}/residual/Add`);
    } else {
      const mid = b.one('Add', [x, attnOut], `${node}/residual/Add_attn`);
      x = b.one('Add', [mid, mlp(layerNorm(mid, 'ffn-norm-weight', 'ffn-norm-bias', layer, 'post_attention_layernorm'))], `${node}/residual/Add_mlp`);
    }
  }

  const final = layerNorm(x, 'final-norm-weight', 'final-norm-bias', null, 'final_norm');
  const headFormat: LinearFormat = options.keepHead ? 'float' : format;
  const logits = linear(final, 'output-head', null, vocabSize, hidden, headFormat, 'lm_head');
  if (act === 'FLOAT') renameOutput(b.nodes, logits, 'logits');
  else b.named('Cast', [logits], '/lm_head/Cast', 'logits', { to: { int: ONNX_DATA_TYPES.FLOAT.id } });

  const usesMicrosoft = b.nodes.some((node) => node.domain === MICROSOFT_DOMAIN);
  return {
    nodes: b.nodes,
    inputs,
    outputs,
    inlineInitializers: b.inlineInitializers,
    weights,
    computed,
    opsets: [{ domain: '', version: 21 }, ...(usesMicrosoft ? [{ domain: MICROSOFT_DOMAIN, version: 1 }] : [])],
  };
}

/** Renames a value (a node output and every later use of it) to a graph output name. */
function renameOutput(nodes: NodeProto[], from: string, to: string): void {
  for (const node of nodes) {
    node.output = (node.output ?? []).map((name) => (name === from ? to : name));
    node.input = (node.input ?? []).map((name) => (name === from ? to : name));
  }
}

/** Dimension helper for tests and inspect: a value info's dims. */
export function valueDims(info: ValueInfoProto): Dim[] {
  return (info.type?.tensorType?.shape?.dim ?? []).map((dim) => (dim.dimParam ? dim.dimParam : Number(dim.dimValue ?? 0)));
}

export type { OnnxDataTypeName };
