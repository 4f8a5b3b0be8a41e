/**
 * An independent model of what `convert --to webgpu` must write (specs/webgpu.md §1.2–§2.4,
 * docs/webgpu-int8-layout.md), for the converter's tests: MLC's record list in model-definition order, the
 * tvmjs.py sharding rule, the QKV reorder of gpt_neox_loader.py, and the quantization math of
 * group_quantization.py / the int8 spec — written from the specs, sharing no code with the converter
 * (only the float primitives of tensor/float.ts and the project's checkpoint reader).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { readCheckpoint } from '../../src/readers/checkpoint.js';
import { f16ToF32, f16ToF32Array, f32ToF16 } from '../../src/tensor/float.js';

export type TypeName = 'q4f16_1' | 'q4f32_1' | 'q0f16' | 'q0f32' | 'q8f16_pq' | 'q8f32_pq';
export const TYPE_NAMES: readonly TypeName[] = ['q4f16_1', 'q4f32_1', 'q0f16', 'q0f32', 'q8f16_pq', 'q8f32_pq'];

export interface TinyConfig {
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  readonly ffn: number;
  readonly vocab: number;
}

export function readTinyConfig(dir: string): TinyConfig {
  const raw = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  return { hidden: raw.hidden_size, layers: raw.num_hidden_layers, heads: raw.num_attention_heads, ffn: raw.intermediate_size, vocab: raw.vocab_size };
}

const isGroup = (type: TypeName): boolean => !type.startsWith('q0');
const modelDType = (type: TypeName): 'float16' | 'float32' => (type.includes('f16') ? 'float16' : 'float32');
const bitsOf = (type: TypeName): number => (type.startsWith('q4') ? 4 : 8);

export interface ExpectedRecord {
  readonly name: string;
  readonly shape: number[];
  readonly dtype: 'uint32' | 'float16' | 'float32';
  /** On disk under the storage asked for. */
  readonly nbytes: number;
  /** In memory (float32 as 4 bytes). */
  readonly memoryBytes: number;
  readonly bf16: boolean;
}

/** MLC's records of a GPT-NeoX model, in the order mlc-llm's GPTNeoXForCausalLM declares its parameters. */
export function expectedRecords(config: TinyConfig, type: TypeName, storage: 'raw' | 'bf16'): ExpectedRecord[] {
  const { hidden: H, ffn: F, vocab: V } = config;
  const out: ExpectedRecord[] = [];
  const size = { uint32: 4, float16: 2, float32: 4 } as const;
  const push = (name: string, shape: number[], dtype: ExpectedRecord['dtype'], bf16: boolean): void => {
    const elements = shape.reduce((a, b) => a * b, 1);
    out.push({ name, shape, dtype, nbytes: elements * (bf16 ? 2 : size[dtype]), memoryBytes: elements * size[dtype], bf16 });
  };
  const weight = (base: string, N: number, K: number): void => {
    if (isGroup(type)) {
      const groups = Math.ceil(K / 32);
      push(`${base}.q_weight`, [N, (groups * 32 * bitsOf(type)) / 32], 'uint32', false);
      // MLC bf16-encodes q4f32_1's float32 scales; polyquant's q8f32_pq keeps its scales raw.
      push(`${base}.q_scale`, [N, groups], modelDType(type), storage === 'bf16' && type === 'q4f32_1');
    } else {
      push(`${base}.weight`, [N, K], modelDType(type), storage === 'bf16' && type === 'q0f32');
    }
  };
  const vector = (name: string, n: number, dtype: 'float16' | 'float32'): void => push(name, [n], dtype, storage === 'bf16' && dtype === 'float32');
  const model = modelDType(type);
  weight('gpt_neox.embed_in', V, H);
  for (let layer = 0; layer < config.layers; layer++) {
    const p = `gpt_neox.layers.${layer}`;
    vector(`${p}.input_layernorm.weight`, H, model);
    vector(`${p}.input_layernorm.bias`, H, model);
    vector(`${p}.post_attention_layernorm.weight`, H, model);
    vector(`${p}.post_attention_layernorm.bias`, H, model);
    weight(`${p}.attention.query_key_value`, 3 * H, H);
    vector(`${p}.attention.query_key_value.bias`, 3 * H, model);
    weight(`${p}.attention.dense`, H, H);
    vector(`${p}.attention.dense.bias`, H, model);
    weight(`${p}.mlp.dense_h_to_4h`, F, H);
    vector(`${p}.mlp.dense_h_to_4h.bias`, F, 'float32');
    weight(`${p}.mlp.dense_4h_to_h`, H, F);
    vector(`${p}.mlp.dense_4h_to_h.bias`, H, 'float32');
  }
  vector('gpt_neox.final_layer_norm.weight', H, model);
  vector('gpt_neox.final_layer_norm.bias', H, model);
  weight('embed_out', V, H);
  return out;
}

export interface SimulatedShard {
  readonly dataPath: string;
  readonly nbytes: number;
  readonly records: { readonly name: string; readonly byteOffset: number }[];
}

/** tvmjs.py TensorCacheShardingManager, transcribed: pending shard, out-of-band records, counter at commit. */
export function simulateSharding(records: readonly { name: string; nbytes: number }[], cap: number): SimulatedShard[] {
  const shards: SimulatedShard[] = [];
  let counter = 0;
  let current: { name: string; byteOffset: number }[] = [];
  let pending = 0;
  const commitInternal = (nbytes: number, contents: { name: string; byteOffset: number }[]): void => {
    shards.push({ dataPath: `params_shard_${counter}.bin`, nbytes, records: contents });
    counter += 1;
  };
  const commit = (): void => {
    if (pending !== 0) {
      commitInternal(pending, current);
      current = [];
      pending = 0;
    }
  };
  for (const { name, nbytes } of records) {
    if (pending + nbytes >= cap) {
      if (nbytes * 2 >= cap) {
        commitInternal(nbytes, [{ name, byteOffset: 0 }]);
        continue;
      }
      commit();
    }
    current.push({ name, byteOffset: pending });
    pending += nbytes;
  }
  commit();
  return shards;
}

// ======================================================================================= the numbers

/** A checkpoint tensor as float32, through the project's reader. */
export async function hfTensor(dir: string, name: string): Promise<Float32Array> {
  const checkpoint = await readCheckpoint(dir);
  const tensor = checkpoint.tensors.get(name);
  if (tensor === undefined) throw new Error(`no ${name} in ${dir}`);
  const bytes = await tensor.read();
  const copy = new Uint8Array(bytes);
  if (tensor.dtype === 'F16') return f16ToF32Array(new Uint16Array(copy.buffer));
  if (tensor.dtype === 'F32') return new Float32Array(copy.buffer);
  throw new Error(`unexpected dtype ${tensor.dtype}`);
}

/**
 * gpt_neox_loader.py: `reshape(qkv, (heads, 3 * head_dim, H))`, split into q, k, v along axis 1, concatenate
 * along axis 0 — [q_all; k_all; v_all]. For the bias, rowLength 1.
 */
export function mlcQkvReorder(values: Float32Array, heads: number, headDim: number, rowLength: number): Float32Array {
  const out = new Float32Array(values.length);
  let target = 0;
  for (let part = 0; part < 3; part++) {
    for (let head = 0; head < heads; head++) {
      for (let d = 0; d < headDim; d++) {
        const sourceRow = head * 3 * headDim + part * headDim + d;
        out.set(values.subarray(sourceRow * rowLength, (sourceRow + 1) * rowLength), target * rowLength);
        target++;
      }
    }
  }
  return out;
}

const half = (x: number): number => f16ToF32(f32ToF16(x));

/** numpy rint / TVM round: nearest, ties to even. */
export function rint(x: number): number {
  const floor = Math.floor(x);
  const fraction = x - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

function halfBytes(values: readonly number[]): Uint8Array {
  return new Uint8Array(Uint16Array.from(values.map((value) => f32ToF16(value))).buffer);
}

/** tvmjs.py _convert_f32_to_bf16: round to nearest even inside ±bf16_limit, truncate outside. */
export function mlcBf16Bytes(values: Float32Array): Uint8Array {
  const bits = new Uint32Array(new Float32Array(values).buffer);
  const out = new Uint16Array(values.length);
  const limit = 0x7f7f0000;
  for (let i = 0; i < bits.length; i++) {
    const data = bits[i] as number;
    const inRange = (data & 0x7fffffff) < limit;
    out[i] = Number((BigInt(data) + (inRange ? BigInt(((data >>> 16) & 1) + 0x7fff) : 0n)) >> 16n) & 0xffff;
  }
  return new Uint8Array(out.buffer);
}

function floatBytes(values: readonly number[], dtype: 'float16' | 'float32', bf16: boolean): Uint8Array {
  if (dtype === 'float16') return halfBytes(values);
  const floats = Float32Array.from(values);
  return bf16 ? mlcBf16Bytes(floats) : new Uint8Array(floats.buffer);
}

/**
 * group_quantization.py `_quantize` for int4 (max_int 7), every operation in the model dtype, then
 * `pack_weight` (8 levels per uint32, element 0 lowest); all-zero groups: level 7, scale 0.
 */
export function mlcInt4(w: Float32Array, N: number, K: number, type: 'q4f16_1' | 'q4f32_1', bf16Scales: boolean): { qWeight: Uint8Array; qScale: Uint8Array } {
  const f16 = type === 'q4f16_1';
  const cast = (x: number): number => (f16 ? half(x) : Math.fround(x));
  const groups = Math.ceil(K / 32);
  const words = new Uint32Array(N * groups * 4);
  const scales: number[] = [];
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < groups; g++) {
      let maxAbs = 0;
      for (let k = g * 32; k < Math.min(K, g * 32 + 32); k++) maxAbs = Math.max(maxAbs, Math.abs(cast(w[n * K + k] as number)));
      const scale = cast(maxAbs / 7);
      scales.push(scale);
      for (let j = 0; j < 32 && g * 32 + j < K; j++) {
        const value = cast(w[n * K + g * 32 + j] as number);
        const level = scale === 0 ? 7 : Math.min(14, Math.max(0, rint(cast(cast(value / scale) + 7))));
        const index = (n * groups + g) * 4 + (j >> 3);
        words[index] = ((words[index] as number) | (level << (4 * (j & 7)))) >>> 0;
      }
    }
  }
  return { qWeight: new Uint8Array(words.buffer), qScale: floatBytes(scales, f16 ? 'float16' : 'float32', bf16Scales) };
}

/** docs/webgpu-int8-layout.md §3: scale = maxAbs/127 (fp16-rounded for q8f16_pq), levels against the stored scale, int8 bytes in K order. */
export function polyquantInt8(w: Float32Array, N: number, K: number, type: 'q8f16_pq' | 'q8f32_pq'): { qWeight: Uint8Array; qScale: Uint8Array } {
  const groups = Math.ceil(K / 32);
  const bytes = new Int8Array(N * groups * 32);
  const scales: number[] = [];
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < groups; g++) {
      let maxAbs = 0;
      for (let k = g * 32; k < Math.min(K, g * 32 + 32); k++) maxAbs = Math.max(maxAbs, Math.abs(w[n * K + k] as number));
      const scale32 = Math.fround(maxAbs / 127);
      const stored = type === 'q8f16_pq' ? half(scale32) : scale32;
      scales.push(stored);
      for (let k = g * 32; k < Math.min(K, g * 32 + 32); k++) {
        bytes[n * groups * 32 + k] = stored === 0 ? 0 : Math.min(127, Math.max(-127, rint(Math.fround((w[n * K + k] as number) / stored))));
      }
    }
  }
  return { qWeight: new Uint8Array(bytes.buffer), qScale: floatBytes(scales, type === 'q8f16_pq' ? 'float16' : 'float32', false) };
}

/** The record bytes a weight [N, K] becomes in `type` (q_weight then q_scale, or the weight). */
export function expectedWeightBytes(w: Float32Array, N: number, K: number, type: TypeName, storage: 'raw' | 'bf16'): Uint8Array[] {
  if (type === 'q4f16_1' || type === 'q4f32_1') {
    const { qWeight, qScale } = mlcInt4(w, N, K, type, storage === 'bf16' && type === 'q4f32_1');
    return [qWeight, qScale];
  }
  if (type === 'q8f16_pq' || type === 'q8f32_pq') {
    const { qWeight, qScale } = polyquantInt8(w, N, K, type);
    return [qWeight, qScale];
  }
  return [floatBytes(Array.from(w), modelDType(type), storage === 'bf16')];
}

/** The record bytes of a vector stored as `dtype`. */
export function expectedVectorBytes(values: Float32Array, dtype: 'float16' | 'float32', storage: 'raw' | 'bf16'): Uint8Array {
  return floatBytes(Array.from(values), dtype, storage === 'bf16' && dtype === 'float32');
}

/** The record's bytes as written: manifest lookup, then the shard slice. */
export function writtenRecordBytes(dir: string, name: string): Uint8Array {
  const manifest = JSON.parse(readFileSync(join(dir, 'tensor-cache.json'), 'utf8')) as {
    records: { dataPath: string; records: { name: string; nbytes: number; byteOffset: number }[] }[];
  };
  for (const shard of manifest.records) {
    const record = shard.records.find((entry) => entry.name === name);
    if (record !== undefined) return new Uint8Array(readFileSync(join(dir, shard.dataPath)).subarray(record.byteOffset, record.byteOffset + record.nbytes));
  }
  throw new Error(`no record ${name} in ${dir}`);
}

/** Byte equality with a readable diff: the first differing byte, and 16 bytes around it of both sides in hex (STYLE.md §12). */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  const length = Math.min(actual.length, expected.length);
  let first = -1;
  for (let i = 0; i < length; i++) {
    if (actual[i] !== expected[i]) {
      first = i;
      break;
    }
  }
  if (first < 0 && actual.length === expected.length) return;
  const at = first < 0 ? length : first;
  const hex = (bytes: Uint8Array): string => Buffer.from(bytes.subarray(Math.max(0, at - 8), at + 8)).toString('hex');
  expect.fail(`${what}: ${first < 0 ? `length ${actual.length}, expected ${expected.length}` : `byte ${first} differs`}\n  actual   …${hex(actual)}…\n  expected …${hex(expected)}…`);
}
