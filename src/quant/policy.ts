/**
 * Per-tensor type choice for GGUF file types, identical to llama-quantize's for GPT-NeoX
 * (llama.cpp src/llama-quant.cpp of the node-llama-cpp 3.21.1 bundle: `llama_ftype_get_default_type`,
 * `tensor_allows_quantization`, `llama_tensor_get_type_impl`, `tensor_type_fallback`; specs/gguf.md §5).
 * GPT-NeoX has no experts and no grouped-query attention (n_gqa = 1), is not Falcon or a 70B, so the
 * branches for those are left out; `i_attention_wv` and `i_ffn_down` equal the layer index because
 * llama-quantize visits tensors layer by layer and each layer has one attn_qkv and one ffn_down.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { GGML_TYPES, type GgmlTypeName } from './ggml-types.js';

/** llama.h `llama_ftype` values and `llama_ftype_get_default_type`, for the file types polyquant writes. */
export const GGUF_FILE_TYPES = {
  f32: { id: 0, defaultType: 'F32' },
  f16: { id: 1, defaultType: 'F16' },
  q4_0: { id: 2, defaultType: 'Q4_0' },
  q4_1: { id: 3, defaultType: 'Q4_1' },
  q8_0: { id: 7, defaultType: 'Q8_0' },
  q5_0: { id: 8, defaultType: 'Q5_0' },
  q5_1: { id: 9, defaultType: 'Q5_1' },
  q2_k: { id: 10, defaultType: 'Q2_K' },
  q3_k_s: { id: 11, defaultType: 'Q3_K' },
  q3_k_m: { id: 12, defaultType: 'Q3_K' },
  q3_k_l: { id: 13, defaultType: 'Q3_K' },
  q4_k_s: { id: 14, defaultType: 'Q4_K' },
  q4_k_m: { id: 15, defaultType: 'Q4_K' },
  q5_k_s: { id: 16, defaultType: 'Q5_K' },
  q5_k_m: { id: 17, defaultType: 'Q5_K' },
  q6_k: { id: 18, defaultType: 'Q6_K' },
  iq4_nl: { id: 25, defaultType: 'IQ4_NL' },
  iq4_xs: { id: 30, defaultType: 'IQ4_XS' },
  bf16: { id: 32, defaultType: 'BF16' },
} as const satisfies Record<string, { id: number; defaultType: GgmlTypeName }>;

export type GgufFileType = keyof typeof GGUF_FILE_TYPES;
export const GGUF_FILE_TYPE_NAMES = Object.keys(GGUF_FILE_TYPES) as GgufFileType[];

export function isGgufFileType(value: string): value is GgufFileType {
  return Object.hasOwn(GGUF_FILE_TYPES, value);
}

export interface PolicyModel {
  readonly numLayers: number;
  /** True when the checkpoint has no separate output head (token_embd doubles as output). */
  readonly tiedEmbeddings: boolean;
  /** Whether an importance matrix is given (changes Q4_0/Q5_0/IQ4 ffn_down choices). */
  readonly imatrix: boolean;
}

export interface PolicyTensor {
  /** GGUF name (`blk.3.attn_qkv.weight`). */
  readonly name: string;
  /** ggml dimensions, ne[0] = row length. */
  readonly ne: readonly number[];
}

/** use_more_bits: the first and last eighth of the layers and every third one between get more bits. */
export function useMoreBits(layer: number, layers: number): boolean {
  const eighth = Math.trunc(layers / 8);
  return layer < eighth || layer >= Math.trunc((7 * layers) / 8) || (layer - eighth) % 3 === 2;
}

const isQuantized = (type: GgmlTypeName): boolean => GGML_TYPES[type].blockElements > 1;

/** tensor_allows_quantization: 2-D (or more) tensors named *weight, not norms. */
export function tensorAllowsQuantization(tensor: PolicyTensor): boolean {
  const dims = tensor.ne.filter((_, i, all) => i === 0 || all.slice(i).some((d) => d !== 1)).length;
  return dims >= 2 && tensor.name.endsWith('weight') && !tensor.name.includes('_norm.weight');
}

function layerOf(name: string): number {
  const match = /^blk\.(\d+)\./.exec(name);
  return match ? Number(match[1]) : -1;
}

/** tensor_type_fallback: a type whose block does not divide the row length falls back (then to F16). */
export function fallbackType(type: GgmlTypeName, rowLength: number): GgmlTypeName {
  if (rowLength % GGML_TYPES[type].blockElements === 0) return type;
  const fallback: Partial<Record<GgmlTypeName, GgmlTypeName>> = {
    IQ4_XS: 'IQ4_NL',
    Q2_K: 'Q4_0',
    Q3_K: 'Q4_0',
    Q4_K: 'Q5_0',
    Q5_K: 'Q5_1',
    Q6_K: 'Q8_0',
  };
  const next = fallback[type] ?? type;
  return rowLength % GGML_TYPES[next].blockElements === 0 ? next : 'F16';
}

/**
 * The ggml type llama-quantize gives `tensor` under `fileType`, or undefined when the tensor is not
 * quantized at all (norms, biases, 1-D tensors keep their type; our converter writes them as F32).
 */
export function tensorTypeFor(fileType: GgufFileType, tensor: PolicyTensor, model: PolicyModel): GgmlTypeName | undefined {
  if (!isGgufFileType(fileType)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `unknown GGUF type ${JSON.stringify(fileType)}`, {
      hint: `choose one of ${GGUF_FILE_TYPE_NAMES.join(', ')}`,
    });
  }
  if (!tensorAllowsQuantization(tensor)) return undefined;
  const defaultType: GgmlTypeName = GGUF_FILE_TYPES[fileType].defaultType;
  if (!isQuantized(defaultType)) return defaultType;
  const rowLength = tensor.ne[0] ?? 0;
  const name = tensor.name;
  const layer = layerOf(name);
  const n = model.numLayers;
  let type: GgmlTypeName = defaultType;

  const isOutput = name === 'output.weight' || (model.tiedEmbeddings && name === 'token_embd.weight');
  if (isOutput) {
    if (rowLength % GGML_TYPES[type].blockElements !== 0) type = 'Q8_0';
    else if (type !== 'Q8_0') type = 'Q6_K';
  } else if (name === 'token_embd.weight') {
    // Only the IQ1/IQ2/IQ3_XXS/TQ ftypes change the embedding; none of ours do.
  } else if (name.includes('attn_qkv.weight')) {
    // attn_v-like (category_is_attn_v includes ATTENTION_QKV); i_attention_wv == layer.
    if (fileType === 'q2_k') type = 'Q3_K';
    else if (fileType === 'q3_k_m') type = layer < 2 ? 'Q5_K' : 'Q4_K';
    else if (fileType === 'q3_k_l') type = 'Q5_K';
    else if ((fileType === 'q4_k_m' || fileType === 'q5_k_m') && useMoreBits(layer, n)) type = 'Q6_K';
    else if (fileType === 'q4_k_s' && layer < 4) type = 'Q5_K';
  } else if (name.includes('ffn_down')) {
    if (fileType === 'q2_k') type = 'Q3_K';
    else if (fileType === 'q3_k_m') type = layer < Math.trunc(n / 16) ? 'Q5_K' : 'Q4_K';
    else if (fileType === 'q3_k_l') type = 'Q5_K';
    else if (fileType === 'q4_k_m') {
      if (useMoreBits(layer, n)) type = 'Q6_K';
    } else if (layer < Math.trunc(n / 8) && (fileType === 'iq4_nl' || fileType === 'iq4_xs') && !model.imatrix) type = 'Q5_K';
    else if (fileType === 'q5_k_m' && useMoreBits(layer, n)) type = 'Q6_K';
    else if (fileType === 'q4_k_s' && layer < Math.trunc(n / 8)) type = 'Q5_K';
    else if ((fileType === 'q4_0' || fileType === 'q5_0') && model.imatrix && layer < Math.trunc(n / 8)) {
      type = fileType === 'q4_0' ? 'Q4_1' : 'Q5_1';
    }
  } else if (name.includes('attn_output.weight')) {
    if (fileType === 'q2_k') type = 'Q3_K';
    else if (fileType === 'q3_k_m') type = 'Q4_K';
    else if (fileType === 'q3_k_l') type = 'Q5_K';
  }
  return fallbackType(type, rowLength);
}
