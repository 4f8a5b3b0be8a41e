/**
 * mlc-chat-config.json → the numbers the forward pass needs (specs/webgpu.md §1.5: GPTNeoXConfig's
 * `model_config`). Validated field by field; a missing or impossible value is a CONFIG error naming the
 * field, the value and the file.
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';

export const CHAT_CONFIG_FILE = 'mlc-chat-config.json';

export interface WebGpuModelConfig {
  /** `quantization` (q4f16_1, q0f32, …). */
  readonly quantization: string;
  readonly hiddenSize: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly numLayers: number;
  readonly intermediateSize: number;
  readonly vocabSize: number;
  /** int(headDim × rotary_pct), as transformers' GPTNeoXRotaryEmbedding (even). */
  readonly rotaryDims: number;
  /** `position_embedding_base`. */
  readonly rotaryBase: number;
  readonly layerNormEps: number;
  readonly useParallelResidual: boolean;
  /** `context_window_size`: positions the rotary tables and a default KV cache cover. */
  readonly contextWindowSize: number;
  /** `hidden_act` when the config names one ("gelu" → exact erf GELU, the gelu_new family → tanh), else exact. */
  readonly activation: 'gelu-erf' | 'gelu-tanh';
}

/** Keeps size arithmetic in safe integers and catches typos, as arch/gpt-neox.ts does for config.json. */
const MAX_DIMENSION = 1 << 20;
const MAX_LAYERS = 1024;
const TANH_ACTIVATIONS = new Set(['gelu_new', 'gelu_fast', 'gelu_pytorch_tanh']);

export function parseChatConfig(raw: unknown, file: string = CHAT_CONFIG_FILE): WebGpuModelConfig {
  const fail = (detail: string, hint?: string): never => {
    throw new PolyquantError(ERROR_CODES.CONFIG, detail, { file, hint });
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('the chat config is not a JSON object');
  const top = raw as Record<string, unknown>;
  const modelType = top['model_type'];
  if (modelType !== undefined && modelType !== 'gpt_neox') {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `model_type ${JSON.stringify(modelType)} is not supported`, { file, hint: 'the WebGPU runtime runs gpt_neox' });
  }
  const model = top['model_config'];
  if (typeof model !== 'object' || model === null || Array.isArray(model)) fail('model_config is missing or not an object');
  const config = model as Record<string, unknown>;
  const integer = (key: string, max: number, fallback?: number): number => {
    const value = config[key] ?? fallback;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > max) {
      fail(`model_config.${key} is ${JSON.stringify(value)}; expected an integer from 1 to ${max}`);
    }
    return value as number;
  };
  const number = (key: string, check: (value: number) => boolean, expected: string, fallback?: number): number => {
    const value = config[key] ?? fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || !check(value)) fail(`model_config.${key} is ${JSON.stringify(value)}; expected ${expected}`);
    return value as number;
  };
  const quantization = top['quantization'];
  if (typeof quantization !== 'string') fail(`quantization is ${JSON.stringify(quantization)}; expected a string such as "q4f16_1"`);
  const hiddenSize = integer('hidden_size', MAX_DIMENSION);
  const numHeads = integer('num_attention_heads', MAX_DIMENSION);
  if (hiddenSize % numHeads !== 0) fail(`hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`);
  const headDim = integer('head_dim', MAX_DIMENSION, hiddenSize / numHeads);
  if (headDim * numHeads !== hiddenSize) fail(`head_dim ${headDim} × num_attention_heads ${numHeads} is not hidden_size ${hiddenSize}`);
  const rotaryPct = number('rotary_pct', (value) => value >= 0 && value <= 1, 'a fraction from 0 to 1', 0.25);
  const rotaryDims = Math.trunc(headDim * rotaryPct);
  if (rotaryDims % 2 !== 0) fail(`rotary dimensions int(${headDim} × ${rotaryPct}) = ${rotaryDims} is odd; rotate-half rope needs an even count`);
  const useParallelResidual = config['use_parallel_residual'] ?? true;
  if (typeof useParallelResidual !== 'boolean') fail(`model_config.use_parallel_residual is ${JSON.stringify(useParallelResidual)}; expected true or false`);
  const hiddenAct = config['hidden_act'] ?? 'gelu';
  if (hiddenAct !== 'gelu' && !TANH_ACTIVATIONS.has(hiddenAct as string)) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `model_config.hidden_act ${JSON.stringify(hiddenAct)} is not supported`, {
      file,
      hint: `supported: gelu, ${[...TANH_ACTIVATIONS].join(', ')}`,
    });
  }
  const vocabSize = integer('vocab_size', 1 << 24, typeof top['vocab_size'] === 'number' ? top['vocab_size'] : undefined);
  const contextWindowSize = integer('context_window_size', 1 << 20, typeof top['context_window_size'] === 'number' ? top['context_window_size'] : undefined);
  return {
    quantization: quantization as string,
    hiddenSize,
    numHeads,
    headDim,
    numLayers: integer('num_hidden_layers', MAX_LAYERS),
    intermediateSize: integer('intermediate_size', MAX_DIMENSION),
    vocabSize,
    rotaryDims,
    rotaryBase: number('position_embedding_base', (value) => value > 0, 'a positive number', 10000),
    layerNormEps: number('layer_norm_eps', (value) => value > 0 && value < 1, 'a small positive number', 1e-5),
    useParallelResidual: useParallelResidual as boolean,
    contextWindowSize,
    activation: hiddenAct === 'gelu' ? 'gelu-erf' : 'gelu-tanh',
  };
}
