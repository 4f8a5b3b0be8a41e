/**
 * The WebGPU folder as data (STYLE.md §6: plan, then write): which tensor-cache records a GPT-NeoX
 * checkpoint becomes in each layout, their dtypes and on-disk formats, how mlc_llm's dumper packs them into
 * `params_shard_N.bin` files, the manifest's JSON, and `mlc-chat-config.json` (specs/webgpu.md §1–§2).
 *
 * Records, names and dtypes are what mlc-llm's GPT-NeoX model (python/mlc_llm/model/gpt_neox/
 * gpt_neox_model.py) and quantization (quantization/group_quantization.py, no_quantization.py) make of the
 * HF checkpoint:
 * - names are the HF names; a Linear or Embedding weight quantized by a group layout becomes
 *   `{layer}.q_weight` + `{layer}.q_scale` (`quant_map.param_map`), every other tensor keeps its name;
 * - group layouts quantize every Linear (the fused QKV, attention.dense, both MLP projections, and embed_out,
 *   which `is_final_fc` names and polyglot does not tie) and the embedding (`quantize_embedding`);
 * - the fused QKV weight and bias are reordered to [q_all; k_all; v_all] before quantization
 *   (gpt_neox_loader.py; the same row move as GGUF's, converters/gguf/names.ts);
 * - everything is cast to the model dtype (`model.to(dtype)`) except the MLP biases, which keep
 *   `ffn_out_dtype` float32 (nn.Linear.to skips the bias of a layer with an out_dtype);
 * - the causal-mask and rotary buffers of old checkpoints are skipped (the reader reports them).
 *
 * Record order is MLC's model-definition order — `named_parameters()` of GPTNeoXForCausalLM: embed_in, per
 * layer input_layernorm, post_attention_layernorm, attention.query_key_value, attention.dense,
 * mlp.dense_h_to_4h, mlp.dense_4h_to_h (each Linear's q_weight, q_scale, bias, as GroupQuantizeLinear
 * declares them), final_layer_norm, embed_out. mlc_llm's loader actually yields parameters grouped by the
 * HF file they come from (`_loading_order`, which depends on the checkpoint's shard index), so no single
 * order reproduces every conversion; the model-definition order depends only on the config, is the order
 * specs/webgpu.md §2.4 tabulates, and for a single-file checkpoint saved by transformers (state-dict order,
 * which is this order) it is the loader's order too.
 */
import { expectedTensors, type ExpectedTensor, type NeoXConfig, type NeoXTensorRole } from '../../arch/gpt-neox.js';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import {
  type TensorCacheStorage,
  WEBGPU_LAYOUTS,
  type WebGpuLayout,
  type WebGpuLayoutName,
  webGpuChunkLayoutId,
  webGpuStoresBf16,
  webGpuTensorSpecs,
} from '../../quant/webgpu-layouts.js';
import type { TensorCacheRecordFormat } from './manifest.js';

/** mlc_llm's `shard_cap_mb = 32` (tvmjs.py dump_tensor_cache): the pending shard is flushed before it would reach this. */
export const SHARD_CAP_BYTES = 32 * 2 ** 20;
/** `f"{prefix}_{counter}.bin"` with prefix `params_shard`. */
export function shardFileName(counter: number): string {
  return `params_shard_${counter}.bin`;
}

export const MLC_CHAT_CONFIG_FILE = 'mlc-chat-config.json';
/** mlc-llm protocol/mlc_chat_config.py `MLC_CHAT_CONFIG_VERSION`. */
export const MLC_CHAT_CONFIG_VERSION = '0.1.0';
/** The tokenizer files mlc_llm gen_config copies when present (interface/gen_config.py), in its order. */
export const MLC_TOKENIZER_FILES = ['tokenizer.model', 'tokenizer.json', 'vocab.json', 'merges.txt', 'added_tokens.json', 'tokenizer_config.json'] as const;

/** dtypes of the records this converter writes. */
export type WebGpuRecordDType = 'uint32' | 'float16' | 'float32';

/** Where a record's bytes come from: a 2-D weight through the pool (one of its parts), or a 1-D tensor. */
export type WebGpuRecordSource =
  | { readonly kind: 'weight'; readonly tensor: ExpectedTensor; readonly part: number; readonly chunkLayout: string }
  | { readonly kind: 'vector'; readonly tensor: ExpectedTensor; readonly dtype: 'float16' | 'float32'; readonly bf16: boolean };

export interface WebGpuPlannedRecord {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: WebGpuRecordDType;
  /** As written in the manifest (every record says f32-to-bf16 under bf16 storage, as MLC writes it). */
  readonly format: TensorCacheRecordFormat;
  /** Bytes on disk. */
  readonly nbytes: number;
  /** Bytes in memory (float32 counted as 4 even when stored as bf16): what MLC's ParamBytes adds up. */
  readonly memoryBytes: number;
  /** Float32 written as bf16. */
  readonly bf16: boolean;
  readonly source: WebGpuRecordSource;
}

export interface WebGpuPlacedRecord extends WebGpuPlannedRecord {
  readonly dataPath: string;
  readonly byteOffset: number;
}

export interface WebGpuPlannedShard {
  readonly dataPath: string;
  readonly nbytes: number;
  /** In byte order. */
  readonly records: readonly WebGpuPlacedRecord[];
}

export interface WebGpuPlannedModel {
  readonly type: WebGpuLayoutName;
  readonly f32Storage: TensorCacheStorage;
  /** Relative to the output folder: '' for one type, the type's name when several are written. */
  readonly folder: string;
  /** In write (model-definition) order. */
  readonly records: readonly WebGpuPlacedRecord[];
  /** In file-counter order, as the manifest lists them. */
  readonly shards: readonly WebGpuPlannedShard[];
  /** Checkpoint parameters (MLC's `total_param_num`). */
  readonly parameters: number;
  /** MLC's metadata: records, in-memory bytes, and in-memory bits per parameter. */
  readonly paramSize: number;
  readonly paramBytes: number;
  readonly bitsPerParam: number;
  /** Bytes of every shard. */
  readonly diskBytes: number;
  /** Whether any float32 record was written as bf16 (then tensor-cache-b16.json is written too). */
  readonly bf16Encoded: boolean;
}

/** The parameters each layout's group quantization takes (2-D weights); the rest are vectors. */
const MLP_BIAS_ROLES: ReadonlySet<NeoXTensorRole> = new Set(['ffn-up-bias', 'ffn-down-bias']);

/** The source tensors in record order (see the module comment), with the output head when the checkpoint ties it. */
export function webGpuSourceTensors(config: NeoXConfig): ExpectedTensor[] {
  if (!config.attentionBias) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'config.json sets attention_bias false; MLC\'s GPT-NeoX model always has attention biases', {
      hint: 'convert to GGUF or ONNX instead',
    });
  }
  // expectedTensors lists HF state-dict order, which for GPT-NeoX is the model-definition order of MLC's
  // GPTNeoXForCausalLM module by module (test/webgpu-convert.test.ts holds the two lists equal).
  return expectedTensors(config);
}

function vectorFormat(storage: TensorCacheStorage, dtype: WebGpuRecordDType, bf16: boolean): TensorCacheRecordFormat {
  // mlc_llm passes encode_format "f32-to-bf16" for the whole dump, so every record carries it; a float32
  // record that is kept raw (q8f32_pq's scales) must say "raw" or readers would halve it.
  if (storage === 'raw') return 'raw';
  return dtype === 'float32' && !bf16 ? 'raw' : 'f32-to-bf16';
}

/** The records of one model in write order, before placement. */
export function planWebGpuRecords(config: NeoXConfig, type: WebGpuLayoutName, storage: TensorCacheStorage): WebGpuPlannedRecord[] {
  const layout: WebGpuLayout = WEBGPU_LAYOUTS[type];
  const chunkLayout = webGpuChunkLayoutId(type, storage);
  const records: WebGpuPlannedRecord[] = [];
  for (const tensor of webGpuSourceTensors(config)) {
    if (tensor.shape.length === 2) {
      const [N, K] = tensor.shape as [number, number];
      for (const [part, spec] of webGpuTensorSpecs(layout, tensor.name, N, K).entries()) {
        const bf16 = spec.dtype === 'float32' && webGpuStoresBf16(layout, part === 0 ? 'weight' : 'scale', storage);
        records.push({
          name: spec.name,
          shape: spec.shape,
          dtype: spec.dtype,
          format: vectorFormat(storage, spec.dtype, bf16),
          nbytes: bf16 ? spec.diskBytes : spec.bytes,
          memoryBytes: spec.bytes,
          bf16,
          source: { kind: 'weight', tensor, part, chunkLayout },
        });
      }
      continue;
    }
    const dtype = MLP_BIAS_ROLES.has(tensor.role) ? 'float32' : layout.modelDType;
    const elements = tensor.shape[0] as number;
    const bf16 = dtype === 'float32' && storage === 'bf16';
    const memoryBytes = elements * (dtype === 'float32' ? 4 : 2);
    records.push({
      name: tensor.name,
      shape: [elements],
      dtype,
      format: vectorFormat(storage, dtype, bf16),
      nbytes: bf16 ? elements * 2 : memoryBytes,
      memoryBytes,
      bf16,
      source: { kind: 'vector', tensor, dtype, bf16 },
    });
  }
  return records;
}

/**
 * Places records into shards exactly as tvmjs.py's `TensorCacheShardingManager.append_or_update` does
 * (specs/webgpu.md §1.3): a record that would bring the pending shard to `cap` or more either goes out of
 * band — alone, at offset 0, into the next counter's file while the pending shard stays open — when it is
 * at least cap/2, or flushes the pending shard first; records are packed back to back with no padding, and
 * a shard takes its counter when it is written (so an out-of-band file can precede the shard that was open
 * before it).
 */
export function placeRecords(records: readonly WebGpuPlannedRecord[], cap: number = SHARD_CAP_BYTES): { records: WebGpuPlacedRecord[]; shards: WebGpuPlannedShard[] } {
  const shards: WebGpuPlannedShard[] = [];
  const byName = new Map<string, WebGpuPlacedRecord>();
  let pending: WebGpuPlannedRecord[] = [];
  let pendingBytes = 0;
  const commit = (contents: readonly { record: WebGpuPlannedRecord; byteOffset: number }[], nbytes: number): void => {
    const dataPath = shardFileName(shards.length);
    const placed = contents.map(({ record, byteOffset }) => ({ ...record, dataPath, byteOffset }));
    for (const record of placed) byName.set(record.name, record);
    shards.push({ dataPath, nbytes, records: placed });
  };
  const flush = (): void => {
    if (pendingBytes === 0) return;
    let offset = 0;
    commit(
      pending.map((record) => {
        const entry = { record, byteOffset: offset };
        offset += record.nbytes;
        return entry;
      }),
      pendingBytes,
    );
    pending = [];
    pendingBytes = 0;
  };
  for (const record of records) {
    if (pendingBytes + record.nbytes >= cap) {
      if (record.nbytes * 2 >= cap) {
        commit([{ record, byteOffset: 0 }], record.nbytes);
        continue;
      }
      flush();
    }
    pending.push(record);
    pendingBytes += record.nbytes;
  }
  flush();
  return { records: records.map((record) => byName.get(record.name) as WebGpuPlacedRecord), shards };
}

/** One model's whole plan: records in order, placed in shards, and MLC's metadata numbers. */
export function planWebGpuModel(
  config: NeoXConfig,
  type: WebGpuLayoutName,
  storage: TensorCacheStorage,
  options: { readonly folder?: string; readonly shardCap?: number } = {},
): WebGpuPlannedModel {
  const planned = planWebGpuRecords(config, type, storage);
  const { records, shards } = placeRecords(planned, options.shardCap ?? SHARD_CAP_BYTES);
  const parameters = webGpuSourceTensors(config).reduce((sum, tensor) => sum + tensor.shape.reduce((product, dim) => product * dim, 1), 0);
  const paramBytes = records.reduce((sum, record) => sum + record.memoryBytes, 0);
  return {
    type,
    f32Storage: storage,
    folder: options.folder ?? '',
    records,
    shards,
    parameters,
    paramSize: records.length,
    paramBytes,
    bitsPerParam: (paramBytes * 8) / parameters,
    diskBytes: shards.reduce((sum, shard) => sum + shard.nbytes, 0),
    bf16Encoded: records.some((record) => record.bf16),
  };
}

// ============================================================================================ the JSON

/** Shard hashes, computed once the shard is written. */
export interface ShardHashes {
  readonly md5: string;
  readonly sha256: string;
}

/**
 * tensor-cache.json as tvmjs.py's `dump_tensor_cache` writes it, key for key (`json.dump(..., indent=4)`;
 * ParamBytes is a Python float there, so it keeps its `.0`), plus a `sha256` per shard after MLC's
 * `md5sum`. `b16` gives the tensor-cache-b16.json twin: bf16-encoded float32 records as `bfloat16` / `raw`.
 * `calibration` (GPTQ-calibrated weights) adds a `PolyquantCalibration` object to the metadata.
 */
export function tensorCacheJson(
  model: WebGpuPlannedModel,
  hashes: readonly ShardHashes[],
  options: { readonly b16?: boolean; readonly calibration?: Readonly<Record<string, unknown>> | undefined } = {},
): string {
  const document = {
    metadata: {
      ParamSize: model.paramSize,
      ParamBytes: model.paramBytes,
      BitsPerParam: model.bitsPerParam,
      // polyquant's own key, only on calibrated models (convert.ts calibrationNote); MLC's readers skip it.
      ...(options.calibration !== undefined && { PolyquantCalibration: options.calibration }),
    },
    records: model.shards.map((shard, index) => ({
      dataPath: shard.dataPath,
      format: 'raw-shard',
      nbytes: shard.nbytes,
      records: shard.records.map((record) => ({
        name: record.name,
        shape: [...record.shape],
        dtype: options.b16 === true && record.bf16 ? 'bfloat16' : record.dtype,
        format: options.b16 === true && record.bf16 ? 'raw' : record.format,
        nbytes: record.nbytes,
        byteOffset: record.byteOffset,
      })),
      md5sum: hashes[index]?.md5,
      sha256: hashes[index]?.sha256,
    })),
  };
  // Python writes a float with a fraction even when it is whole (2145939456.0); JSON.stringify does not.
  return JSON.stringify(document, null, 4).replace(/^( {8}"(?:ParamBytes|BitsPerParam)": -?\d+)(,?)$/gm, '$1.0$2');
}

/** The conversation template of a base language model: mlc-llm conversation_template's "LM", as a plain object. */
function plainConversationTemplate(bos: number, eos: number): Record<string, unknown> {
  return {
    name: 'LM',
    system_template: '{system_message}',
    system_message: '',
    system_prefix_token_ids: [bos],
    add_role_after_system_message: true,
    roles: { user: '', assistant: '' },
    role_templates: { user: '{user_message}', assistant: '{assistant_message}', tool: '{tool_message}' },
    messages: [],
    seps: [''],
    role_content_sep: '',
    role_empty_sep: '',
    stop_str: [],
    stop_token_ids: [eos],
    function_string: '',
    use_function_calling: false,
  };
}

/** Token ids the chat config names: generation_config.json first, then config.json, then MLC's system defaults. */
export interface ChatConfigTokens {
  readonly bos: number;
  readonly eos: number;
  readonly pad: number;
}

/**
 * mlc-chat-config.json (mlc-llm protocol/mlc_chat_config.py, specs/webgpu.md §1.5) with GPTNeoXConfig's
 * model_config. `position_embedding_base` is the checkpoint's rotary base: MLC itself reads only
 * `rope_theta` and falls back to 10000, which is polyglot-ko's (and Pythia's) base anyway.
 */
export function mlcChatConfig(config: NeoXConfig, type: WebGpuLayoutName, tokens: ChatConfigTokens, tokenizerFiles: readonly string[], byteLevel: boolean): Record<string, unknown> {
  const context = config.maxPositionEmbeddings;
  const prefill = Math.min(context, 8192);
  return {
    version: MLC_CHAT_CONFIG_VERSION,
    model_type: 'gpt_neox',
    quantization: type,
    model_config: {
      use_parallel_residual: config.useParallelResidual,
      hidden_size: config.hiddenSize,
      intermediate_size: config.intermediateSize,
      num_attention_heads: config.numHeads,
      num_hidden_layers: config.numLayers,
      layer_norm_eps: config.layerNormEps,
      vocab_size: config.vocabSize,
      rotary_pct: config.rotaryPct,
      position_embedding_base: config.rotaryBase,
      context_window_size: context,
      head_dim: config.headDim,
      prefill_chunk_size: prefill,
      tensor_parallel_shards: 1,
      ffn_out_dtype: 'float32',
      max_batch_size: 1,
    },
    vocab_size: config.vocabSize,
    context_window_size: context,
    sliding_window_size: -1,
    prefill_chunk_size: prefill,
    attention_sink_size: -1,
    tensor_parallel_shards: 1,
    pipeline_parallel_stages: 1,
    temperature: 1.0,
    presence_penalty: 0.0,
    frequency_penalty: 0.0,
    repetition_penalty: 1.0,
    top_p: 1.0,
    tokenizer_files: [...tokenizerFiles],
    tokenizer_info: {
      token_postproc_method: byteLevel ? 'byte_level' : 'byte_fallback',
      prepend_space_in_encode: false,
      strip_space_in_decode: false,
    },
    conv_template: plainConversationTemplate(tokens.bos, tokens.eos),
    pad_token_id: tokens.pad,
    bos_token_id: tokens.bos,
    eos_token_id: tokens.eos,
    model_task: 'chat',
  };
}
