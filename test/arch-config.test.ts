import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { expectedTensors, normaliseNeoXConfig, bufferKind } from '../src/arch/gpt-neox.js';
import { PolyquantError } from '../src/errors.js';
import { SYNTH_PRESETS } from '../src/synth/presets.js';
import { HAS_SHARED, sharedPath } from './helpers/shared.js';

const loadShared = (name: string): unknown => JSON.parse(readFileSync(sharedPath('data', 'polyglot-ko', name), 'utf8'));

/** A Pythia-style config (EleutherAI/pythia-70m): rotary 0.25, parallel residual, untied head. */
const PYTHIA_70M = {
  architectures: ['GPTNeoXForCausalLM'],
  bos_token_id: 0,
  eos_token_id: 0,
  hidden_act: 'gelu',
  hidden_size: 512,
  initializer_range: 0.02,
  intermediate_size: 2048,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 2048,
  model_type: 'gpt_neox',
  num_attention_heads: 8,
  num_hidden_layers: 6,
  rotary_emb_base: 10000,
  rotary_pct: 0.25,
  tie_word_embeddings: false,
  torch_dtype: 'float16',
  use_cache: true,
  use_parallel_residual: true,
  vocab_size: 50304,
};

function configError(raw: unknown): PolyquantError {
  try {
    normaliseNeoXConfig(raw, '/m/config.json');
  } catch (error) {
    if (error instanceof PolyquantError) return error;
    throw error;
  }
  throw new Error('expected a PolyquantError');
}

describe.skipIf(!HAS_SHARED)('the four real polyglot-ko configs', () => {
  const cases = [
    ['config.polyglot-ko-1.3b.json', { hiddenSize: 2048, numLayers: 24, numHeads: 16, headDim: 128, rotaryDims: 64, intermediateSize: 8192 }],
    ['config.polyglot-ko-3.8b.json', { hiddenSize: 3072, numLayers: 32, numHeads: 24, headDim: 128, rotaryDims: 64, intermediateSize: 12288 }],
    ['config.polyglot-ko-5.8b.json', { hiddenSize: 4096, numLayers: 28, numHeads: 16, headDim: 256, rotaryDims: 64, intermediateSize: 16384 }],
    ['config.polyglot-ko-12.8b.json', { hiddenSize: 5120, numLayers: 40, numHeads: 40, headDim: 128, rotaryDims: 64, intermediateSize: 20480 }],
  ] as const;
  for (const [file, expected] of cases) {
    it(`normalises ${file}`, () => {
      const config = normaliseNeoXConfig(loadShared(file), file);
      expect(config).toMatchObject({
        ...expected,
        vocabSize: 30080,
        hiddenAct: 'gelu',
        useParallelResidual: true,
        tieWordEmbeddings: false,
        rotaryBase: 10000,
        layerNormEps: 1e-5,
        maxPositionEmbeddings: 2048,
        bosTokenId: 0,
        eosTokenId: 2,
        torchDtype: 'float16',
      });
    });
  }

  it('gives the 3.8b preset exactly the published 3.8b config', () => {
    const published = loadShared('config.polyglot-ko-3.8b.json') as Record<string, unknown>;
    expect(SYNTH_PRESETS['polyglot-ko-3.8b'].config).toEqual(published);
    expect(SYNTH_PRESETS['polyglot-ko-1.3b'].config).toEqual(loadShared('config.polyglot-ko-1.3b.json'));
  });
});

describe('GPT-NeoX config normalisation', () => {
  it('loads a Pythia-style config with rotary_pct 0.25', () => {
    const config = normaliseNeoXConfig(PYTHIA_70M, 'pythia/config.json');
    expect(config.headDim).toBe(64);
    expect(config.rotaryDims).toBe(16);
    expect(config.useParallelResidual).toBe(true);
  });

  it('loads sequential-residual and tied-embedding variants', () => {
    const config = normaliseNeoXConfig({ ...PYTHIA_70M, use_parallel_residual: false, tie_word_embeddings: true }, 'c.json');
    expect(config.useParallelResidual).toBe(false);
    expect(config.tieWordEmbeddings).toBe(true);
    const tied = expectedTensors(config).find((entry) => entry.name === 'embed_out.weight');
    expect(tied?.optional).toBe(true);
  });

  it('reads the renamed keys of newer transformers (partial_rotary_factor, rope_theta)', () => {
    const { rotary_pct: _pct, rotary_emb_base: _base, ...rest } = PYTHIA_70M;
    const config = normaliseNeoXConfig({ ...rest, partial_rotary_factor: 0.5, rope_theta: 500000 }, 'c.json');
    expect(config.rotaryDims).toBe(32);
    expect(config.rotaryBase).toBe(500000);
  });

  it('fills GPTNeoXConfig defaults for omitted fields', () => {
    const { rotary_pct: _a, hidden_act: _b, use_parallel_residual: _c, ...rest } = PYTHIA_70M;
    const config = normaliseNeoXConfig(rest, 'c.json');
    expect(config.rotaryPct).toBe(0.25);
    expect(config.hiddenAct).toBe('gelu');
    expect(config.useParallelResidual).toBe(true);
  });

  it('refuses an unknown architecture and lists the supported ones', () => {
    const error = configError({ ...PYTHIA_70M, architectures: ['LlamaForCausalLM'] });
    expect(error.code).toBe('unsupported');
    expect(error.message).toContain('/m/config.json');
    expect(error.message).toContain('LlamaForCausalLM');
    expect(error.message).toContain('supported architectures: GPTNeoXForCausalLM');
  });

  it('refuses a hidden size that the heads do not divide', () => {
    const error = configError({ ...PYTHIA_70M, num_attention_heads: 7 });
    expect(error.code).toBe('config');
    expect(error.message).toContain('hidden_size 512 is not divisible by num_attention_heads 7');
  });

  it('refuses a missing or mistyped required field, naming it', () => {
    const { vocab_size: _v, ...rest } = PYTHIA_70M;
    expect(configError(rest).message).toContain('missing required field vocab_size');
    expect(configError({ ...PYTHIA_70M, num_hidden_layers: '6' }).message).toContain('num_hidden_layers is "6"');
    expect(configError({ ...PYTHIA_70M, hidden_act: 'swish' }).message).toContain('hidden_act "swish" is not supported');
    expect(configError([1, 2]).message).toContain('not a JSON object');
  });

  it('lists every parameter in state-dict order with the shapes the config implies', () => {
    const config = normaliseNeoXConfig(PYTHIA_70M, 'c.json');
    const tensors = expectedTensors(config);
    expect(tensors).toHaveLength(4 + 12 * 6);
    expect(tensors[0]).toMatchObject({ name: 'gpt_neox.embed_in.weight', shape: [50304, 512] });
    expect(tensors.find((t) => t.name === 'gpt_neox.layers.5.attention.query_key_value.weight')?.shape).toEqual([1536, 512]);
    expect(tensors.find((t) => t.name === 'gpt_neox.layers.0.mlp.dense_4h_to_h.weight')?.shape).toEqual([512, 2048]);
    expect(tensors.at(-1)).toMatchObject({ name: 'embed_out.weight', shape: [50304, 512] });
  });

  it('recognises the three per-layer buffers and nothing else', () => {
    expect(bufferKind('gpt_neox.layers.3.attention.bias')).toBe('attention.bias');
    expect(bufferKind('gpt_neox.layers.3.attention.masked_bias')).toBe('attention.masked_bias');
    expect(bufferKind('gpt_neox.layers.12.attention.rotary_emb.inv_freq')).toBe('attention.rotary_emb.inv_freq');
    expect(bufferKind('gpt_neox.layers.3.attention.dense.bias')).toBeUndefined();
    expect(bufferKind('gpt_neox.layers.3.attention.query_key_value.bias')).toBeUndefined();
  });
});
