/**
 * Per-tensor type choice for GGUF file types, identical to llama-quantize's for GPT-NeoX
 * (llama.cpp src/llama-quant.cpp of the node-llama-cpp 3.21.1 bundle: `llama_ftype_get_default_type`,
 * `tensor_allows_quantization`, `llama_tensor_get_type` and `llama_tensor_get_type_impl`,
 * `tensor_type_fallback`; tools/quantize/quantize.cpp for the option syntax; specs/gguf.md §5).
 * GPT-NeoX has no experts and no grouped-query attention (n_gqa = 1), is not Falcon or a 70B, so the
 * branches for those are left out.
 *
 * llama-quantize's options are here too: `--output-tensor-type`, `--token-embedding-type`, `--pure` and
 * `--tensor-type PATTERN=TYPE` (`TypeOverrides`). `planTensorTypes` visits the tensors in llama-quantize's
 * order and keeps its counters (`i_attention_wv`, `i_ffn_down`), which only advance for tensors that take
 * the mixture — so an override of one layer's attn_qkv shifts the mixture of the layers after it exactly
 * as llama-quantize does. `tensorTypeFor` is the one-tensor form for when every tensor takes the mixture.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { canonicalGgmlTypeName } from './api.js';
import { GGML_TYPE_NAMES, GGML_TYPES, type GgmlTypeName } from './ggml-types.js';

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
/** A file type named in any case (`q4_k_m`, `Q4_K_M`). */
export type GgufFileTypeAnyCase = GgufFileType | Uppercase<GgufFileType>;

/**
 * llama-quantize's aliases (tools/quantize/quantize.cpp QUANT_OPTIONS): `Q3_K`, `Q4_K` and `Q5_K` name
 * the _M mixtures.
 */
export const GGUF_FILE_TYPE_ALIASES: Readonly<Record<string, GgufFileType>> = { q3_k: 'q3_k_m', q4_k: 'q4_k_m', q5_k: 'q5_k_m' };

export function isGgufFileType(value: string): value is GgufFileType {
  return Object.hasOwn(GGUF_FILE_TYPES, value);
}

/**
 * The canonical (lower-case) file type a name stands for, in any case, llama-quantize's aliases included
 * (`Q4_K_M`, `q4_k_m` and `Q4_K` → `q4_k_m`); undefined for a name that is none.
 */
export function canonicalGgufFileType(name: string): GgufFileType | undefined {
  if (typeof name !== 'string') return undefined;
  const lower = name.trim().toLowerCase();
  if (isGgufFileType(lower)) return lower;
  return Object.hasOwn(GGUF_FILE_TYPE_ALIASES, lower) ? GGUF_FILE_TYPE_ALIASES[lower] : undefined;
}

/** canonicalGgufFileType, or a USAGE error listing the canonical names. */
export function requireGgufFileType(name: string, what = 'GGUF type'): GgufFileType {
  const fileType = canonicalGgufFileType(name);
  if (fileType === undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, `unknown ${what} ${JSON.stringify(name)}`, {
      hint: `choose one of ${GGUF_FILE_TYPE_NAMES.join(', ')} (any case)`,
    });
  }
  return fileType;
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

/** One `--tensor-type PATTERN=TYPE`: tensors whose name the regular expression finds get `type`. */
export interface TensorTypeOverride {
  /** The pattern as llama-quantize keeps it (lower-cased), an ECMAScript regular expression. */
  readonly pattern: string;
  readonly type: GgmlTypeName;
}

/** llama-quantize's per-tensor options (llama_model_quantize_params). */
export interface TypeOverrides {
  /** `--output-tensor-type`: output.weight's type, whatever the file type (no fallback). */
  readonly outputTensorType?: GgmlTypeName | undefined;
  /** `--token-embedding-type`: token_embd.weight's type, whatever the file type (no fallback). */
  readonly tokenEmbeddingType?: GgmlTypeName | undefined;
  /** `--pure`: no mixture; every quantizable tensor gets the file type's default type (then the fallback). */
  readonly pure?: boolean | undefined;
  /** `--tensor-type`, in the order given: the first whose pattern matches wins (quantized file types only). */
  readonly tensorTypes?: readonly TensorTypeOverride[] | undefined;
}

/** Why a tensor has the type it has. */
export type TypeSource = 'kept' | 'file-type' | 'mixture' | 'pure' | 'tensor-type' | 'output-tensor-type' | 'token-embedding-type';

export interface TensorTypeChoice {
  /** The ggml type llama-quantize gives the tensor; undefined when it keeps the tensor as it is (norms, biases). */
  readonly type: GgmlTypeName | undefined;
  readonly source: TypeSource;
  /** The type the rules chose before the fallback for a row length its blocks do not divide. */
  readonly fallbackFrom?: GgmlTypeName;
  /** Index of the `--tensor-type` override that matched, for source 'tensor-type'. */
  readonly override?: number;
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

/** tensor_get_category, for the categories GPT-NeoX has. */
type Category = 'output' | 'token-embedding' | 'attn-v' | 'attn-output' | 'ffn-up' | 'ffn-down' | 'other';

function categoryOf(name: string): Category {
  if (name === 'output.weight') return 'output';
  if (name === 'token_embd.weight' || name === 'per_layer_token_embd.weight') return 'token-embedding';
  // category_is_attn_v: ATTENTION_QKV, ATTENTION_KV_B and ATTENTION_V.
  if (name.includes('attn_qkv.weight') || name.includes('attn_kv_b.weight') || name.includes('attn_v.weight')) return 'attn-v';
  if (name.includes('attn_output.weight')) return 'attn-output';
  if (name.includes('ffn_up')) return 'ffn-up';
  if (name.includes('ffn_down')) return 'ffn-down';
  return 'other';
}

/** llama-quantize's running state (quantize_state_impl): how many attn_v-like / ffn_down tensors took the mixture. */
interface MixtureCounters {
  attentionV: number;
  readonly attentionVCount: number;
  ffnDown: number;
  readonly ffnDownCount: number;
}

/** llama_tensor_get_type_impl for GPT-NeoX and the file types polyquant writes; advances the counters as it does. */
function mixtureType(fileType: GgufFileType, tensor: PolicyTensor, category: Category, model: PolicyModel, counters: MixtureCounters): GgmlTypeName {
  let type: GgmlTypeName = GGUF_FILE_TYPES[fileType].defaultType;
  const rowLength = tensor.ne[0] ?? 0;
  if (category === 'output' || (model.tiedEmbeddings && category === 'token-embedding')) {
    if (rowLength % GGML_TYPES[type].blockElements !== 0) type = 'Q8_0';
    else if (type !== 'Q8_0') type = 'Q6_K';
  } else if (category === 'token-embedding') {
    // Only the IQ1/IQ2/IQ3_XXS/TQ/Q2_0 ftypes change the embedding; none of ours do.
  } else if (category === 'attn-v') {
    const i = counters.attentionV;
    if (fileType === 'q2_k') type = 'Q3_K';
    else if (fileType === 'q3_k_m') type = i < 2 ? 'Q5_K' : 'Q4_K';
    else if (fileType === 'q3_k_l') type = 'Q5_K';
    else if ((fileType === 'q4_k_m' || fileType === 'q5_k_m') && useMoreBits(i, counters.attentionVCount)) type = 'Q6_K';
    else if (fileType === 'q4_k_s' && i < 4) type = 'Q5_K';
    counters.attentionV += 1;
  } else if (category === 'ffn-down') {
    // layer_info without experts: the counter and the model's block count.
    const i = counters.ffnDown;
    const n = counters.ffnDownCount;
    if (fileType === 'q2_k') type = 'Q3_K';
    else if (fileType === 'q3_k_m') type = i < Math.trunc(n / 16) ? 'Q5_K' : 'Q4_K';
    else if (fileType === 'q3_k_l') type = 'Q5_K';
    else if (fileType === 'q4_k_m') {
      if (useMoreBits(i, n)) type = 'Q6_K';
    } else if (i < Math.trunc(n / 8) && (fileType === 'iq4_nl' || fileType === 'iq4_xs') && !model.imatrix) type = 'Q5_K';
    else if (fileType === 'q5_k_m' && useMoreBits(i, n)) type = 'Q6_K';
    else if (fileType === 'q4_k_s' && i < Math.trunc(n / 8)) type = 'Q5_K';
    else if ((fileType === 'q4_0' || fileType === 'q5_0') && model.imatrix && i < Math.trunc(n / 8)) {
      type = fileType === 'q4_0' ? 'Q4_1' : 'Q5_1';
    }
    counters.ffnDown += 1;
  } else if (category === 'attn-output') {
    if (fileType === 'q2_k') type = 'Q3_K';
    else if (fileType === 'q3_k_m') type = 'Q4_K';
    else if (fileType === 'q3_k_l') type = 'Q5_K';
  }
  return type;
}

/** llama_tensor_get_type: the options first, then the overrides or the mixture, then the fallback. */
function chooseType(
  fileType: GgufFileType,
  tensor: PolicyTensor,
  model: PolicyModel,
  overrides: TypeOverrides,
  counters: MixtureCounters,
  patterns: readonly CompiledOverride[],
): TensorTypeChoice {
  if (!tensorAllowsQuantization(tensor)) return { type: undefined, source: 'kept' };
  const category = categoryOf(tensor.name);
  if (overrides.tokenEmbeddingType !== undefined && category === 'token-embedding') {
    return { type: overrides.tokenEmbeddingType, source: 'token-embedding-type' };
  }
  if (overrides.outputTensorType !== undefined && category === 'output') return { type: overrides.outputTensorType, source: 'output-tensor-type' };
  const defaultType: GgmlTypeName = GGUF_FILE_TYPES[fileType].defaultType;
  if (!isQuantized(defaultType)) return { type: defaultType, source: 'file-type' };
  let type = defaultType;
  let source: TypeSource = overrides.pure ? 'pure' : 'mixture';
  let override: number | undefined;
  const index = patterns.findIndex(({ regex }) => regex.test(tensor.name));
  const matched = patterns[index];
  if (matched !== undefined) {
    type = matched.type;
    source = 'tensor-type';
    override = index;
  } else if (!overrides.pure) {
    // The tied-embedding case takes --output-tensor-type (llama_tensor_get_type_impl's first branch).
    if (model.tiedEmbeddings && category === 'token-embedding' && overrides.outputTensorType !== undefined) {
      return { type: overrides.outputTensorType, source: 'output-tensor-type' };
    }
    type = mixtureType(fileType, tensor, category, model, counters);
  }
  const fallen = fallbackType(type, tensor.ne[0] ?? 0);
  return { type: fallen, source, ...(fallen !== type && { fallbackFrom: type }), ...(override !== undefined && { override }) };
}

interface CompiledOverride {
  readonly regex: RegExp;
  readonly type: GgmlTypeName;
}

function compile(overrides: TypeOverrides): CompiledOverride[] {
  return (overrides.tensorTypes ?? []).map(({ pattern, type }) => ({ regex: compilePattern(pattern, pattern), type }));
}

function compilePattern(pattern: string, spec: string): RegExp {
  try {
    // std::regex_search with the default ECMAScript grammar: find anywhere in the name, no flags.
    return new RegExp(pattern);
  } catch (error) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--tensor-type ${JSON.stringify(spec)}: ${JSON.stringify(pattern)} is not a valid regular expression`, {
      hint: `${error instanceof Error ? `${error.message}; ` : ''}write PATTERN=TYPE, e.g. --tensor-type attn_qkv=q8_0 or --tensor-type "blk\\.[0-3]\\.ffn_down=q6_k"`,
    });
  }
}

/**
 * The types llama-quantize gives `tensors`, which must be in its order (llama-model-loader.h
 * `weight_name_comparer`: whole-model tensors, then block by block, each sorted by name). Throws USAGE
 * for an invalid override pattern.
 */
export function planTensorTypes(
  fileType: GgufFileTypeAnyCase,
  tensors: readonly PolicyTensor[],
  model: PolicyModel,
  overrides: TypeOverrides = {},
): TensorTypeChoice[] {
  const canonical = requireGgufFileType(fileType);
  const patterns = compile(overrides);
  const counters: MixtureCounters = {
    attentionV: 0,
    attentionVCount: tensors.filter((tensor) => categoryOf(tensor.name) === 'attn-v').length,
    ffnDown: 0,
    ffnDownCount: model.numLayers,
  };
  return tensors.map((tensor) => chooseType(canonical, tensor, model, overrides, counters, patterns));
}

/**
 * The ggml type llama-quantize gives `tensor` under `fileType` (any case) with no options, or undefined
 * when the tensor is not quantized at all (norms, biases, 1-D tensors keep their type; our converter
 * writes them as F32). Every earlier layer is taken to have had the mixture, so the layer number is the
 * counter.
 */
export function tensorTypeFor(fileType: GgufFileTypeAnyCase, tensor: PolicyTensor, model: PolicyModel): GgmlTypeName | undefined {
  const canonical = requireGgufFileType(fileType);
  const layer = Number(/^blk\.(\d+)\./.exec(tensor.name)?.[1] ?? -1);
  const counters: MixtureCounters = { attentionV: layer, attentionVCount: model.numLayers, ffnDown: layer, ffnDownCount: model.numLayers };
  return chooseType(canonical, tensor, model, {}, counters, []).type;
}

/** A ggml type for a GGUF tensor, named in any case, or a USAGE error naming `flag`. */
export function requireGgufTensorType(flag: string, value: string): GgmlTypeName {
  const type = canonicalGgmlTypeName(value);
  if (type === undefined || !GGML_TYPES[type].formats.includes('gguf')) {
    const choices = GGML_TYPE_NAMES.filter((name) => GGML_TYPES[name].formats.includes('gguf'));
    throw new PolyquantError(ERROR_CODES.USAGE, `${flag} ${JSON.stringify(value)} is not a ggml type polyquant writes`, {
      hint: `choose one of ${choices.join(', ')} (any case)`,
    });
  }
  return type;
}

/**
 * Parses one `--tensor-type PATTERN=TYPE` as llama-quantize's `parse_tensor_type` does: split at the first
 * `=`, both sides non-empty, the pattern lower-cased, the type a ggml type name in any case. Throws USAGE
 * naming the flag and the value.
 */
export function parseTensorTypeOverride(spec: string): TensorTypeOverride {
  const flag = '--tensor-type';
  const equals = spec.indexOf('=');
  const example = 'write PATTERN=TYPE, e.g. --tensor-type attn_qkv=q8_0 (PATTERN is a regular expression searched in each GGUF tensor name)';
  if (equals < 0) throw new PolyquantError(ERROR_CODES.USAGE, `${flag} ${JSON.stringify(spec)} has no "="`, { hint: example });
  if (equals === 0) throw new PolyquantError(ERROR_CODES.USAGE, `${flag} ${JSON.stringify(spec)} has no tensor name pattern before "="`, { hint: example });
  if (equals === spec.length - 1) throw new PolyquantError(ERROR_CODES.USAGE, `${flag} ${JSON.stringify(spec)} has no type after "="`, { hint: example });
  const pattern = spec.slice(0, equals).toLowerCase();
  const type = requireGgufTensorType(`${flag} ${JSON.stringify(spec)}: type`, spec.slice(equals + 1));
  compilePattern(pattern, spec);
  return { pattern, type };
}
