/**
 * Synthetic checkpoint presets: the real polyglot-ko configs (EleutherAI/polyglot-ko-*, config.json as
 * published, specs/eval.md §4) and the real repos' layout (~1 GB safetensors shards + index, one
 * pytorch_model.bin), plus a tiny model for tests and the README's quick start.
 */

export interface SynthPreset {
  readonly name: string;
  /** config.json exactly as the real repository has it. */
  readonly config: Readonly<Record<string, unknown>>;
  /** Largest safetensors shard, in bytes, as transformers' save_pretrained(max_shard_size="1GB") splits. */
  readonly shardBytes: number | undefined;
  /** Whether the per-layer buffers (attention.bias, masked_bias, rotary inv_freq) are saved too. */
  readonly buffers: boolean;
  /** Whether the real polyglot-ko tokenizer applies (its 30,003 ids need vocab_size ≥ 30,003). */
  readonly realTokenizer: boolean;
}

const POLYGLOT_COMMON = {
  architectures: ['GPTNeoXForCausalLM'],
  bos_token_id: 0,
  classifier_dropout: 0.1,
  eos_token_id: 2,
  hidden_act: 'gelu',
  initializer_range: 0.02,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 2048,
  model_type: 'gpt_neox',
  rotary_emb_base: 10000,
  tie_word_embeddings: false,
  torch_dtype: 'float16',
  transformers_version: '4.29.2',
  use_cache: true,
  use_parallel_residual: true,
  vocab_size: 30080,
};

/** transformers' "1GB" is 10^9 bytes (utils/hub.py convert_file_size_to_int). */
const ONE_GB = 1_000_000_000;

export const SYNTH_PRESETS = {
  'polyglot-ko-1.3b': {
    name: 'polyglot-ko-1.3b',
    config: {
      _name_or_path: './polyglot-ko-1.3b/',
      ...POLYGLOT_COMMON,
      hidden_size: 2048,
      intermediate_size: 8192,
      num_attention_heads: 16,
      num_hidden_layers: 24,
      rotary_pct: 0.5,
    },
    shardBytes: ONE_GB,
    buffers: true,
    realTokenizer: true,
  },
  'polyglot-ko-3.8b': {
    name: 'polyglot-ko-3.8b',
    config: {
      _name_or_path: './polyglot-ko-3.8b/',
      ...POLYGLOT_COMMON,
      hidden_size: 3072,
      intermediate_size: 12288,
      num_attention_heads: 24,
      num_hidden_layers: 32,
      rotary_pct: 0.5,
    },
    shardBytes: ONE_GB,
    buffers: true,
    realTokenizer: true,
  },
  tiny: {
    name: 'tiny',
    config: {
      ...POLYGLOT_COMMON,
      hidden_size: 64,
      intermediate_size: 256,
      num_attention_heads: 4,
      num_hidden_layers: 2,
      max_position_embeddings: 128,
      rotary_pct: 0.5,
      vocab_size: 384,
    },
    shardBytes: undefined,
    buffers: true,
    realTokenizer: false,
  },
} as const satisfies Record<string, SynthPreset>;

export type SynthPresetName = keyof typeof SYNTH_PRESETS;
export const SYNTH_PRESET_NAMES = Object.keys(SYNTH_PRESETS) as SynthPresetName[];
