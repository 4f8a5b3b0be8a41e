/**
 * Where everything the reference engine touches lives in its one shared WebAssembly memory: the weights
 * (widened to float32 once, at load), and one workspace per worker thread (activations for a step of
 * tokens, the KV cache, a chunk of logits). The layout is plain data so it can be posted to workers, which
 * all map the same SharedArrayBuffer: weights are stored once however many threads read them.
 *
 * Weight layouts are Hugging Face's `nn.Linear` ([out, in], modeling_gpt_neox.py) — the kernel's native
 * operand — except the fused QKV projection, whose rows HF interleaves per head as [heads, 3, headDim]
 * (`qkv.view(..., num_attention_heads, 3 * head_size)` then slices q, k, v per head); we store them as
 * [3, heads, headDim] so q, k and v of all heads come out as three contiguous blocks of each row.
 */
import type { HiddenActivation, NeoXConfig, NeoXTensorRole } from '../../arch/gpt-neox.js';
import { HIDDEN_ACTIVATIONS } from '../../arch/gpt-neox.js';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import type { Checkpoint } from '../../readers/checkpoint.js';
import type { TensorRef } from '../../readers/tensor-ref.js';
import { bf16ToF32Array, f16ToF32Array } from '../../tensor/float.js';
import { sharedMemory, WASM_MAX_PAGES, WASM_PAGE_BYTES, type WasmMemory } from './reference-wasm.js';

/** Byte offsets of one layer's parameters. */
export interface LayerOffsets {
  readonly inputNormWeight: number;
  readonly inputNormBias: number;
  readonly postAttentionNormWeight: number;
  readonly postAttentionNormBias: number;
  /** [3·hidden, hidden], rows reordered to [q heads | k heads | v heads]. */
  readonly qkvWeight: number;
  readonly qkvBias: number;
  readonly denseWeight: number;
  readonly denseBias: number;
  readonly upWeight: number;
  readonly upBias: number;
  readonly downWeight: number;
  readonly downBias: number;
}

/** Byte offsets of one worker's scratch and KV cache. */
export interface WorkspaceOffsets {
  /** [stepTokens, hidden]: the residual stream. */
  readonly residual: number;
  /** [stepTokens, hidden]: LayerNorm output (input of QKV, the MLP, and the output head). */
  readonly normed: number;
  /** [stepTokens, 3·hidden]: q | k | v. */
  readonly qkv: number;
  /** [stepTokens, hidden]: attention output before `dense` (heads merged). */
  readonly context: number;
  /** [stepTokens, hidden]: `dense` output (attn_output). */
  readonly attention: number;
  /** [stepTokens, intermediate]. */
  readonly mlpHidden: number;
  /** [stepTokens, hidden]. */
  readonly mlpOutput: number;
  /** [queryBlock, contextStride]: attention scores, then probabilities. */
  readonly scores: number;
  /** [layers, contextLength, hidden]: rotated keys, one row per position. */
  readonly keys: number;
  /** [layers, hidden, contextStride]: values transposed (one row per head dimension, positions along it). */
  readonly values: number;
  /** [headChunk, vocab]. */
  readonly logits: number;
  /**
   * Only in a layout planned with `inputProducts` (calibration Hessians, ReferenceRunner.inputProducts):
   * [maxInput, stepTokens], one step's rows of a linear layer's input, transposed so that the matrix
   * kernel's operands are contiguous along the tokens it sums over.
   */
  readonly productInput?: number;
  /** Only with `inputProducts`: [PRODUCT_BLOCK_ROWS, maxInput], one block of rows of Xᵀ X in float32. */
  readonly productBlock?: number;
}

export interface ModelLayout {
  readonly hidden: number;
  readonly heads: number;
  readonly headDim: number;
  readonly rotaryDims: number;
  readonly rotaryBase: number;
  readonly intermediate: number;
  readonly vocab: number;
  readonly layers: number;
  readonly layerNormEps: number;
  readonly parallelResidual: boolean;
  readonly activation: (typeof HIDDEN_ACTIVATIONS)[HiddenActivation];
  /** Longest sequence a workspace holds (KV cache rows). */
  readonly contextLength: number;
  /** contextLength rounded up to 4: the row stride of scores and transposed values (the kernel's lanes). */
  readonly contextStride: number;
  /** Tokens pushed through the layers together. */
  readonly stepTokens: number;
  /** Queries per attention block (bounds the scores buffer and the masked work past the diagonal). */
  readonly queryBlock: number;
  /** Positions per output-head matmul. */
  readonly headChunk: number;
  readonly embedIn: number;
  readonly finalNormWeight: number;
  readonly finalNormBias: number;
  /** The output head; equals embedIn when the embeddings are tied. */
  readonly embedOut: number;
  readonly layerOffsets: readonly LayerOffsets[];
  readonly workspaces: readonly WorkspaceOffsets[];
  readonly totalBytes: number;
}

const STEP_TOKENS = 256;
const QUERY_BLOCK = 64;
const HEAD_CHUNK = 64;
/**
 * Rows of Xᵀ X per kernel call in inputProducts: the block's outputs (128 × intermediate floats, 512 KiB
 * at 1024 columns) stay in L2 while the JavaScript loop adds them into the float64 totals.
 */
export const PRODUCT_BLOCK_ROWS = 128;
/** Cache-line alignment for every array. */
const ALIGN = 64;

class Allocator {
  bytes = 0;

  floats(count: number): number {
    const offset = this.bytes;
    this.bytes += Math.ceil((count * 4) / ALIGN) * ALIGN;
    return offset;
  }
}

export interface LayoutOptions {
  /**
   * Reserve each workspace's scratch for ReferenceRunner.inputProducts (calibration Hessians): about
   * (stepTokens + PRODUCT_BLOCK_ROWS) × max(hidden, intermediate) floats per workspace. Off by default, so
   * engines that only score carry none of it.
   */
  readonly inputProducts?: boolean;
}

export function planLayout(config: NeoXConfig, contextLength: number, workspaceCount: number, options: LayoutOptions = {}): ModelLayout {
  const { hiddenSize: hidden, intermediateSize: intermediate, vocabSize: vocab, numLayers: layers } = config;
  const contextStride = Math.ceil(contextLength / 4) * 4;
  const stepTokens = Math.min(STEP_TOKENS, contextLength);
  const queryBlock = Math.min(QUERY_BLOCK, stepTokens);
  const headChunk = Math.min(HEAD_CHUNK, stepTokens);
  const allocate = new Allocator();
  // Offset 0 is never handed out, so a zero offset in a layout is always a bug.
  allocate.floats(ALIGN / 4);
  const embedIn = allocate.floats(vocab * hidden);
  const layerOffsets: LayerOffsets[] = [];
  for (let layer = 0; layer < layers; layer += 1) {
    layerOffsets.push({
      inputNormWeight: allocate.floats(hidden),
      inputNormBias: allocate.floats(hidden),
      postAttentionNormWeight: allocate.floats(hidden),
      postAttentionNormBias: allocate.floats(hidden),
      qkvWeight: allocate.floats(3 * hidden * hidden),
      // Without attention biases (GPTNeoXConfig.attention_bias false) these stay zero: adding zero is exact.
      qkvBias: allocate.floats(3 * hidden),
      denseWeight: allocate.floats(hidden * hidden),
      denseBias: allocate.floats(hidden),
      upWeight: allocate.floats(intermediate * hidden),
      upBias: allocate.floats(intermediate),
      downWeight: allocate.floats(hidden * intermediate),
      downBias: allocate.floats(hidden),
    });
  }
  const finalNormWeight = allocate.floats(hidden);
  const finalNormBias = allocate.floats(hidden);
  const embedOut = config.tieWordEmbeddings ? embedIn : allocate.floats(vocab * hidden);
  const workspaces: WorkspaceOffsets[] = [];
  for (let index = 0; index < workspaceCount; index += 1) {
    workspaces.push({
      residual: allocate.floats(stepTokens * hidden),
      normed: allocate.floats(stepTokens * hidden),
      qkv: allocate.floats(stepTokens * 3 * hidden),
      context: allocate.floats(stepTokens * hidden),
      attention: allocate.floats(stepTokens * hidden),
      mlpHidden: allocate.floats(stepTokens * intermediate),
      mlpOutput: allocate.floats(stepTokens * hidden),
      scores: allocate.floats(queryBlock * contextStride),
      keys: allocate.floats(layers * contextLength * hidden),
      values: allocate.floats(layers * hidden * contextStride),
      logits: allocate.floats(headChunk * vocab),
      ...(options.inputProducts === true && {
        productInput: allocate.floats(Math.max(hidden, intermediate) * stepTokens),
        productBlock: allocate.floats(PRODUCT_BLOCK_ROWS * Math.max(hidden, intermediate)),
      }),
    });
  }
  return {
    hidden,
    heads: config.numHeads,
    headDim: config.headDim,
    rotaryDims: config.rotaryDims,
    rotaryBase: config.rotaryBase,
    intermediate,
    vocab,
    layers,
    layerNormEps: config.layerNormEps,
    parallelResidual: config.useParallelResidual,
    activation: HIDDEN_ACTIVATIONS[config.hiddenAct],
    contextLength,
    contextStride,
    stepTokens,
    queryBlock,
    headChunk,
    embedIn,
    finalNormWeight,
    finalNormBias,
    embedOut,
    layerOffsets,
    workspaces,
    totalBytes: allocate.bytes,
  };
}

/**
 * One input the reference engine reports for calibration (ReferenceEngine.squaredInputs): the input rows
 * of the linear layer whose weight has `role` in block `layer`, as Σ x² per column, `columns` values at
 * `offset` of the result.
 */
export interface ActivationSlot {
  readonly role: Extract<NeoXTensorRole, 'qkv-weight' | 'attn-output-weight' | 'ffn-up-weight' | 'ffn-down-weight' | 'output-head'>;
  readonly layer: number | null;
  readonly offset: number;
  readonly columns: number;
}

/**
 * The slots of a squaredInputs result: per layer the inputs of query_key_value, attention.dense,
 * dense_h_to_4h and dense_4h_to_h (hidden, hidden, hidden and intermediate columns), then, with `head`,
 * the output head's input (the final LayerNorm's output, hidden columns). These are the matrices
 * llama-imatrix sees as the weights of mul_mat nodes (tools/imatrix/imatrix.cpp collect_imatrix).
 */
export function activationSlots(layout: Pick<ModelLayout, 'hidden' | 'intermediate' | 'layers'>, head: boolean): ActivationSlot[] {
  const { hidden, intermediate, layers } = layout;
  const slots: ActivationSlot[] = [];
  let offset = 0;
  const add = (role: ActivationSlot['role'], layer: number | null, columns: number): void => {
    slots.push({ role, layer, offset, columns });
    offset += columns;
  };
  for (let layer = 0; layer < layers; layer += 1) {
    add('qkv-weight', layer, hidden);
    add('attn-output-weight', layer, hidden);
    add('ffn-up-weight', layer, hidden);
    add('ffn-down-weight', layer, intermediate);
  }
  if (head) add('output-head', null, hidden);
  return slots;
}

/** Values in the packed lower triangle of a K × K matrix (row i holds columns 0 … i, from i(i + 1)/2). */
export function packedTriangleSize(columns: number): number {
  return (columns * (columns + 1)) / 2;
}

/**
 * The slots of an inputProducts result: the same inputs in the same order as activationSlots, each as the
 * packed lower triangle of Σ x xᵀ (`columns` × `columns`), `packedTriangleSize(columns)` values at
 * `offset`.
 */
export function inputProductSlots(layout: Pick<ModelLayout, 'hidden' | 'intermediate' | 'layers'>, head: boolean): ActivationSlot[] {
  let offset = 0;
  return activationSlots(layout, head).map((slot) => {
    const packed = { ...slot, offset };
    offset += packedTriangleSize(slot.columns);
    return packed;
  });
}

/** WebAssembly pages the layout needs. */
function layoutPages(layout: ModelLayout): number {
  return Math.ceil(layout.totalBytes / WASM_PAGE_BYTES);
}

/** Whether the layout fits one WebAssembly memory (wasm32 addresses at most 4 GiB). */
export function layoutFits(layout: ModelLayout): boolean {
  return layoutPages(layout) <= WASM_MAX_PAGES;
}

/** A shared memory big enough for the layout, or a LIMIT error: wasm32 addresses at most 4 GiB. */
export function allocateMemory(layout: ModelLayout, parameters: number, dir: string): WasmMemory {
  if (!layoutFits(layout)) {
    const gib = (layout.totalBytes / 2 ** 30).toFixed(1);
    throw new PolyquantError(
      ERROR_CODES.LIMIT,
      `the reference engine needs ${gib} GiB (${parameters} parameters as float32 plus KV caches), over the 4 GiB a WebAssembly memory can address`,
      { file: dir, hint: 'use the reference engine for small models only, or lower --threads / contextLength' },
    );
  }
  return sharedMemory(layoutPages(layout));
}

export type WeightTransform = (name: string, values: Float32Array, shape: readonly number[]) => Float32Array;

/** A tensor's values as float32 (fp16/bf16 widened exactly, fp64 rounded). */
export async function readAsFloat32(tensor: TensorRef): Promise<Float32Array> {
  const stored = await tensor.read();
  const count = tensor.shape.reduce((product, dim) => product * dim, 1);
  // Typed-array views need their element alignment; copy when the bytes start at an odd offset.
  const aligned = (bytes: number): Uint8Array => (stored.byteOffset % bytes === 0 ? stored : stored.slice());
  switch (tensor.dtype) {
    case 'F32': {
      const bytes = aligned(4);
      return new Float32Array(bytes.buffer, bytes.byteOffset, count).slice();
    }
    case 'F16': {
      const bytes = aligned(2);
      return f16ToF32Array(new Uint16Array(bytes.buffer, bytes.byteOffset, count));
    }
    case 'BF16': {
      const bytes = aligned(2);
      return bf16ToF32Array(new Uint16Array(bytes.buffer, bytes.byteOffset, count));
    }
    case 'F64': {
      const bytes = aligned(8);
      return Float32Array.from(new Float64Array(bytes.buffer, bytes.byteOffset, count));
    }
    default:
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the reference engine cannot read dtype ${tensor.dtype}`, {
        file: tensor.file,
        tensor: tensor.name,
      });
  }
}

/**
 * Reads every parameter into the memory at the layout's offsets. 2-D weights pass through `transform`
 * (after widening, in HF layout and name) — the hook for simulated quantization; norms and biases do not.
 */
export async function loadWeights(
  checkpoint: Checkpoint,
  layout: ModelLayout,
  memory: WasmMemory,
  transform: WeightTransform | undefined,
): Promise<void> {
  const floats = new Float32Array(memory.buffer);
  const { config } = checkpoint;
  const load = async (name: string, offset: number, arrange?: (values: Float32Array, target: Float32Array) => void): Promise<void> => {
    const tensor = checkpoint.tensors.get(name);
    if (tensor === undefined) {
      throw new PolyquantError(ERROR_CODES.CONFIG, 'the checkpoint lacks this tensor', { file: checkpoint.dir, tensor: name });
    }
    let values = await readAsFloat32(tensor);
    if (transform !== undefined && tensor.shape.length === 2) {
      const transformed = transform(name, values, tensor.shape);
      if (!(transformed instanceof Float32Array) || transformed.length !== values.length) {
        throw new PolyquantError(
          ERROR_CODES.USAGE,
          `weightTransform returned ${transformed instanceof Float32Array ? `${transformed.length} floats` : 'something other than a Float32Array'}; expected ${values.length}`,
          { tensor: name },
        );
      }
      values = transformed;
    }
    const target = floats.subarray(offset / 4, offset / 4 + values.length);
    if (arrange === undefined) target.set(values);
    else arrange(values, target);
  };
  const { numHeads: heads, headDim, hiddenSize: hidden } = config;
  // HF row (head·3 + part)·headDim + d  →  our row (part·heads + head)·headDim + d; works for the bias too
  // (rowLength 1).
  const reorderQkv =
    (rowLength: number) =>
    (values: Float32Array, target: Float32Array): void => {
      for (let head = 0; head < heads; head += 1) {
        for (let part = 0; part < 3; part += 1) {
          const from = (head * 3 + part) * headDim * rowLength;
          const to = (part * heads + head) * headDim * rowLength;
          target.set(values.subarray(from, from + headDim * rowLength), to);
        }
      }
    };
  await load('gpt_neox.embed_in.weight', layout.embedIn);
  for (let layer = 0; layer < config.numLayers; layer += 1) {
    const offsets = layout.layerOffsets[layer] as LayerOffsets;
    const prefix = `gpt_neox.layers.${layer}`;
    await load(`${prefix}.input_layernorm.weight`, offsets.inputNormWeight);
    await load(`${prefix}.input_layernorm.bias`, offsets.inputNormBias);
    await load(`${prefix}.post_attention_layernorm.weight`, offsets.postAttentionNormWeight);
    await load(`${prefix}.post_attention_layernorm.bias`, offsets.postAttentionNormBias);
    await load(`${prefix}.attention.query_key_value.weight`, offsets.qkvWeight, reorderQkv(hidden));
    await load(`${prefix}.attention.dense.weight`, offsets.denseWeight);
    if (config.attentionBias) {
      await load(`${prefix}.attention.query_key_value.bias`, offsets.qkvBias, reorderQkv(1));
      await load(`${prefix}.attention.dense.bias`, offsets.denseBias);
    }
    await load(`${prefix}.mlp.dense_h_to_4h.weight`, offsets.upWeight);
    await load(`${prefix}.mlp.dense_h_to_4h.bias`, offsets.upBias);
    await load(`${prefix}.mlp.dense_4h_to_h.weight`, offsets.downWeight);
    await load(`${prefix}.mlp.dense_4h_to_h.bias`, offsets.downBias);
  }
  await load('gpt_neox.final_layer_norm.weight', layout.finalNormWeight);
  await load('gpt_neox.final_layer_norm.bias', layout.finalNormBias);
  // Tied embeddings: GPTNeoXForCausalLM.tie_weights makes embed_out share embed_in, ignoring any stored copy.
  if (!config.tieWordEmbeddings) await load('embed_out.weight', layout.embedOut);
}
