/**
 * GPT-NeoX: config normalisation and the checkpoint's tensor roles.
 * Upstream: transformers/models/gpt_neox/configuration_gpt_neox.py (GPTNeoXConfig defaults and the
 * renamed keys) and modeling_gpt_neox.py (module names, the registered buffers). The polyglot-ko and
 * Pythia families both use it; polyglot-ko-5.8b is the one with rotary_pct 0.25.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';

export const GPT_NEOX_ARCHITECTURE = 'GPTNeoXForCausalLM';

/**
 * Activations GPT-NeoX checkpoints name in `hidden_act`, mapped to the function the forward pass uses
 * (transformers/activations.py ACT2FN): "gelu" is the exact erf GELU; the others are the tanh form.
 */
export const HIDDEN_ACTIVATIONS = {
  gelu: 'gelu-erf',
  gelu_new: 'gelu-tanh',
  gelu_fast: 'gelu-tanh',
  gelu_pytorch_tanh: 'gelu-tanh',
} as const;
export type HiddenActivation = keyof typeof HIDDEN_ACTIVATIONS;

/** The normalised config every later stage reads. Field names are ours; `source` keeps the raw JSON. */
export interface NeoXConfig {
  readonly architecture: typeof GPT_NEOX_ARCHITECTURE;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly intermediateSize: number;
  readonly hiddenAct: HiddenActivation;
  /** Fraction of each head's dimensions that get rotary embeddings. */
  readonly rotaryPct: number;
  /** int(headDim × rotaryPct), as GPTNeoXRotaryEmbedding computes it; GGUF's rope.dimension_count. */
  readonly rotaryDims: number;
  readonly rotaryBase: number;
  readonly maxPositionEmbeddings: number;
  readonly layerNormEps: number;
  readonly useParallelResidual: boolean;
  readonly tieWordEmbeddings: boolean;
  /** Whether the attention projections carry biases (GPTNeoXConfig.attention_bias, default true). */
  readonly attentionBias: boolean;
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
  /** The dtype the checkpoint says it was saved in (`torch_dtype`), if it says. */
  readonly torchDtype: string | undefined;
}

export const SUPPORTED_ARCHITECTURES: readonly string[] = [GPT_NEOX_ARCHITECTURE];

/** GPTNeoXConfig's defaults for the fields a config may omit (configuration_gpt_neox.py __init__). */
const DEFAULTS = {
  hidden_act: 'gelu',
  rotary_pct: 0.25,
  rotary_emb_base: 10000,
  max_position_embeddings: 2048,
  layer_norm_eps: 1e-5,
  use_parallel_residual: true,
  tie_word_embeddings: false,
  attention_bias: true,
  bos_token_id: 0,
  eos_token_id: 2,
} as const;

/** Bounds that keep later size arithmetic in safe integers and catch typos (a 1e9-wide layer is a typo). */
const MAX_DIMENSION = 1 << 20;
const MAX_LAYERS = 1024;

type RawConfig = Record<string, unknown>;

export function normaliseNeoXConfig(raw: unknown, file: string): NeoXConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new PolyquantError(ERROR_CODES.CONFIG, 'config.json is not a JSON object', { file });
  }
  const config = raw as RawConfig;
  const architectures = config['architectures'];
  const architecture = Array.isArray(architectures) ? architectures[0] : undefined;
  const modelType = config['model_type'];
  if (architecture === undefined && modelType !== 'gpt_neox') {
    throw new PolyquantError(ERROR_CODES.CONFIG, 'config.json names no architecture (`architectures` is missing)', {
      file,
      hint: `supported: ${SUPPORTED_ARCHITECTURES.join(', ')}`,
    });
  }
  if (architecture !== undefined && architecture !== GPT_NEOX_ARCHITECTURE) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `architecture ${JSON.stringify(architecture)} is not supported`, {
      file,
      hint: `supported architectures: ${SUPPORTED_ARCHITECTURES.join(', ')}`,
    });
  }

  const read = new FieldReader(config, file);
  const hiddenSize = read.positiveInt('hidden_size', MAX_DIMENSION);
  const numHeads = read.positiveInt('num_attention_heads', MAX_DIMENSION);
  if (hiddenSize % numHeads !== 0) {
    throw new PolyquantError(
      ERROR_CODES.CONFIG,
      `hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`,
      { file },
    );
  }
  const headDim = hiddenSize / numHeads;
  // Newer transformers renamed rotary_pct → partial_rotary_factor and rotary_emb_base → rope_theta.
  const rotaryPct = read.fraction(['rotary_pct', 'partial_rotary_factor'], DEFAULTS.rotary_pct);
  const rotaryDims = Math.trunc(headDim * rotaryPct);
  if (rotaryDims % 2 !== 0) {
    throw new PolyquantError(
      ERROR_CODES.CONFIG,
      `rotary dimensions int(${headDim} × ${rotaryPct}) = ${rotaryDims} is odd; rotate-half rope needs an even count`,
      { file },
    );
  }
  const ropeScaling = config['rope_scaling'];
  if (ropeScaling !== undefined && ropeScaling !== null) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `rope_scaling ${JSON.stringify(ropeScaling)} is not supported`, {
      file,
      hint: 'only plain rotary embeddings (rope_scaling null) are supported',
    });
  }
  const hiddenAct = read.string('hidden_act', DEFAULTS.hidden_act);
  if (!Object.hasOwn(HIDDEN_ACTIVATIONS, hiddenAct)) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `hidden_act ${JSON.stringify(hiddenAct)} is not supported`, {
      file,
      hint: `supported: ${Object.keys(HIDDEN_ACTIVATIONS).join(', ')}`,
    });
  }

  return {
    architecture: GPT_NEOX_ARCHITECTURE,
    vocabSize: read.positiveInt('vocab_size', MAX_DIMENSION),
    hiddenSize,
    numLayers: read.positiveInt('num_hidden_layers', MAX_LAYERS),
    numHeads,
    headDim,
    intermediateSize: read.positiveInt('intermediate_size', MAX_DIMENSION),
    hiddenAct: hiddenAct as HiddenActivation,
    rotaryPct,
    rotaryDims,
    rotaryBase: read.positiveNumber(['rotary_emb_base', 'rope_theta'], DEFAULTS.rotary_emb_base),
    maxPositionEmbeddings: read.positiveInt('max_position_embeddings', MAX_DIMENSION, DEFAULTS.max_position_embeddings),
    layerNormEps: read.positiveNumber(['layer_norm_eps'], DEFAULTS.layer_norm_eps),
    useParallelResidual: read.boolean('use_parallel_residual', DEFAULTS.use_parallel_residual),
    tieWordEmbeddings: read.boolean('tie_word_embeddings', DEFAULTS.tie_word_embeddings),
    attentionBias: read.boolean('attention_bias', DEFAULTS.attention_bias),
    bosTokenId: read.optionalTokenId('bos_token_id', DEFAULTS.bos_token_id),
    eosTokenId: read.optionalTokenId('eos_token_id', DEFAULTS.eos_token_id),
    torchDtype: typeof config['torch_dtype'] === 'string' ? config['torch_dtype'] : undefined,
  };
}

/** Typed access to config fields with one error shape: file, key, value, what was expected. */
class FieldReader {
  constructor(
    private readonly config: RawConfig,
    private readonly file: string,
  ) {}

  private fail(key: string, value: unknown, expected: string): never {
    throw new PolyquantError(ERROR_CODES.CONFIG, `${key} is ${JSON.stringify(value)}; expected ${expected}`, {
      file: this.file,
    });
  }

  positiveInt(key: string, max: number, fallback?: number): number {
    const value = this.config[key] ?? fallback;
    if (value === undefined) {
      throw new PolyquantError(ERROR_CODES.CONFIG, `missing required field ${key}`, { file: this.file });
    }
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
      this.fail(key, value, `an integer from 1 to ${max}`);
    }
    return value;
  }

  positiveNumber(keys: readonly string[], fallback: number): number {
    for (const key of keys) {
      const value = this.config[key];
      if (value === undefined || value === null) continue;
      if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) this.fail(key, value, 'a positive number');
      return value;
    }
    return fallback;
  }

  fraction(keys: readonly string[], fallback: number): number {
    for (const key of keys) {
      const value = this.config[key];
      if (value === undefined || value === null) continue;
      if (typeof value !== 'number' || !(value > 0 && value <= 1)) this.fail(key, value, 'a number in (0, 1]');
      return value;
    }
    return fallback;
  }

  string(key: string, fallback: string): string {
    const value = this.config[key] ?? fallback;
    if (typeof value !== 'string') this.fail(key, value, 'a string');
    return value;
  }

  boolean(key: string, fallback: boolean): boolean {
    const value = this.config[key] ?? fallback;
    if (typeof value !== 'boolean') this.fail(key, value, 'true or false');
    return value;
  }

  optionalTokenId(key: string, fallback: number): number | undefined {
    const value = this.config[key];
    if (value === null) return undefined;
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) this.fail(key, value, 'a token id');
    return value;
  }
}

/** What a tensor in a GPT-NeoX checkpoint is; the converters key their name maps on this. */
export type NeoXTensorRole =
  | 'token-embedding'
  | 'output-head'
  | 'final-norm-weight'
  | 'final-norm-bias'
  | 'attn-norm-weight'
  | 'attn-norm-bias'
  | 'qkv-weight'
  | 'qkv-bias'
  | 'attn-output-weight'
  | 'attn-output-bias'
  | 'ffn-norm-weight'
  | 'ffn-norm-bias'
  | 'ffn-up-weight'
  | 'ffn-up-bias'
  | 'ffn-down-weight'
  | 'ffn-down-bias';

interface RoleRow {
  readonly role: NeoXTensorRole;
  /** HF name, with `{layer}` for per-layer tensors. */
  readonly hfName: string;
  readonly shape: (config: NeoXConfig) => number[];
  readonly perLayer: boolean;
}

/** The one table of GPT-NeoX parameters (modeling_gpt_neox.py module tree), in HF state-dict order. */
export const NEOX_TENSORS: readonly RoleRow[] = [
  { role: 'token-embedding', hfName: 'gpt_neox.embed_in.weight', shape: (c) => [c.vocabSize, c.hiddenSize], perLayer: false },
  { role: 'attn-norm-weight', hfName: 'gpt_neox.layers.{layer}.input_layernorm.weight', shape: (c) => [c.hiddenSize], perLayer: true },
  { role: 'attn-norm-bias', hfName: 'gpt_neox.layers.{layer}.input_layernorm.bias', shape: (c) => [c.hiddenSize], perLayer: true },
  { role: 'ffn-norm-weight', hfName: 'gpt_neox.layers.{layer}.post_attention_layernorm.weight', shape: (c) => [c.hiddenSize], perLayer: true },
  { role: 'ffn-norm-bias', hfName: 'gpt_neox.layers.{layer}.post_attention_layernorm.bias', shape: (c) => [c.hiddenSize], perLayer: true },
  { role: 'qkv-weight', hfName: 'gpt_neox.layers.{layer}.attention.query_key_value.weight', shape: (c) => [3 * c.hiddenSize, c.hiddenSize], perLayer: true },
  { role: 'qkv-bias', hfName: 'gpt_neox.layers.{layer}.attention.query_key_value.bias', shape: (c) => [3 * c.hiddenSize], perLayer: true },
  { role: 'attn-output-weight', hfName: 'gpt_neox.layers.{layer}.attention.dense.weight', shape: (c) => [c.hiddenSize, c.hiddenSize], perLayer: true },
  { role: 'attn-output-bias', hfName: 'gpt_neox.layers.{layer}.attention.dense.bias', shape: (c) => [c.hiddenSize], perLayer: true },
  { role: 'ffn-up-weight', hfName: 'gpt_neox.layers.{layer}.mlp.dense_h_to_4h.weight', shape: (c) => [c.intermediateSize, c.hiddenSize], perLayer: true },
  { role: 'ffn-up-bias', hfName: 'gpt_neox.layers.{layer}.mlp.dense_h_to_4h.bias', shape: (c) => [c.intermediateSize], perLayer: true },
  { role: 'ffn-down-weight', hfName: 'gpt_neox.layers.{layer}.mlp.dense_4h_to_h.weight', shape: (c) => [c.hiddenSize, c.intermediateSize], perLayer: true },
  { role: 'ffn-down-bias', hfName: 'gpt_neox.layers.{layer}.mlp.dense_4h_to_h.bias', shape: (c) => [c.hiddenSize], perLayer: true },
  { role: 'final-norm-weight', hfName: 'gpt_neox.final_layer_norm.weight', shape: (c) => [c.hiddenSize], perLayer: false },
  { role: 'final-norm-bias', hfName: 'gpt_neox.final_layer_norm.bias', shape: (c) => [c.hiddenSize], perLayer: false },
  { role: 'output-head', hfName: 'embed_out.weight', shape: (c) => [c.vocabSize, c.hiddenSize], perLayer: false },
];

const ATTENTION_BIAS_ROLES: ReadonlySet<NeoXTensorRole> = new Set(['qkv-bias', 'attn-output-bias']);

export interface ExpectedTensor {
  readonly name: string;
  readonly role: NeoXTensorRole;
  /** null for whole-model tensors. */
  readonly layer: number | null;
  readonly shape: readonly number[];
  /** A tied output head may be absent: it reuses the token embedding. */
  readonly optional: boolean;
}

/** Every parameter a checkpoint with this config holds, in HF state-dict order (layers in between). */
export function expectedTensors(config: NeoXConfig): ExpectedTensor[] {
  const rows = NEOX_TENSORS.filter((row) => config.attentionBias || !ATTENTION_BIAS_ROLES.has(row.role));
  const global = (row: RoleRow): ExpectedTensor => ({
    name: row.hfName,
    role: row.role,
    layer: null,
    shape: row.shape(config),
    optional: row.role === 'output-head' && config.tieWordEmbeddings,
  });
  const out: ExpectedTensor[] = [global(rows[0] as RoleRow)];
  for (let layer = 0; layer < config.numLayers; layer += 1) {
    for (const row of rows) {
      if (!row.perLayer) continue;
      out.push({
        name: row.hfName.replace('{layer}', String(layer)),
        role: row.role,
        layer,
        shape: row.shape(config),
        optional: false,
      });
    }
  }
  for (const row of rows.slice(1)) if (!row.perLayer) out.push(global(row));
  return out;
}

/**
 * Non-parameter buffers that GPT-NeoX checkpoints saved by older transformers carry (modeling_gpt_neox.py
 * `register_buffer`: the causal mask `bias`, `masked_bias`, and the rotary `inv_freq`). They are
 * derivable from the config, so readers skip and report them.
 */
const BUFFER_PATTERN = /^gpt_neox\.layers\.(\d+)\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)$/;

export function bufferKind(name: string): string | undefined {
  const match = BUFFER_PATTERN.exec(name);
  return match === null ? undefined : `attention.${match[2]}`;
}

/**
 * cos and sin of position·inv_freq[i] for positions 0 … count − 1 and i < rotaryDims/2, row-major
 * [position][i]. GPTNeoXRotaryEmbedding computes everything in float32: inv_freq = 1/base^(2i/dim),
 * freqs = t ⊗ inv_freq (one float32 product), then cos/sin of those float32 angles. We round at the same
 * points, which matters at long positions (the angle's float32 rounding is ~3e-5 rad at position 512).
 * The second half of each rotated block reuses the first half's angles (emb = cat(freqs, freqs)).
 */
export function rotaryTables(rotaryDims: number, base: number, count: number): { cos: Float32Array; sin: Float32Array } {
  const half = rotaryDims / 2;
  const inverseFrequency = new Float32Array(half);
  for (let i = 0; i < half; i += 1) {
    const exponent = Math.fround((2 * i) / rotaryDims);
    inverseFrequency[i] = Math.fround(1 / Math.fround(base ** exponent));
  }
  const cos = new Float32Array(count * half);
  const sin = new Float32Array(count * half);
  for (let position = 0; position < count; position += 1) {
    for (let i = 0; i < half; i += 1) {
      const angle = Math.fround(position * (inverseFrequency[i] as number));
      cos[position * half + i] = Math.cos(angle);
      sin[position * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}
