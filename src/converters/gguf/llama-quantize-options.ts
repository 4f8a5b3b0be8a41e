/**
 * What the HF converter (convert.ts) and the GGUF requantizer (requantize.ts) share: llama-quantize's
 * per-tensor options read from strings (`--output-tensor-type`, `--token-embedding-type`, `--pure`,
 * `--tensor-type PATTERN=TYPE`; tools/quantize/quantize.cpp), the checks and warnings on the types they
 * give, the KVs llama-quantize sets last (llama-quant.cpp `llama_model_quantize_impl`: general.
 * quantization_version, general.file_type, then the quantize.imatrix.* overrides of quantize.cpp), and the
 * dry-run error measurement.
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { dequantizeRows } from '../../quant/api.js';
import { GGML_TYPES, type GgmlTypeName } from '../../quant/ggml-types.js';
import { createErrorStats, type ErrorStatsResult } from '../../quant/metrics.js';
import {
  GGUF_FILE_TYPES,
  type GgufFileType,
  type PolicyTensor,
  parseTensorTypeOverride,
  requireGgufTensorType,
  type TensorTypeChoice,
  type TypeOverrides,
} from '../../quant/policy.js';
import { QuantPool } from '../../quant/pool.js';
import { type GgufKV, type GgufTensorToWrite, writeGguf } from './format.js';

/** GGML_QNT_VERSION (ggml.h), written by convert_hf_to_gguf.py and llama-quantize alike. */
export const GGML_QUANTIZATION_VERSION = 2;
/**
 * Float32 elements per chunk handed to a worker (4 MiB): large enough that a task's overhead is noise,
 * small enough that 2 chunks per worker in flight keep memory flat (DESIGN.md "Stream").
 */
export const CHUNK_ELEMENTS = 1 << 20;
/** quantize.cpp copies the imatrix file name and dataset into a 128-byte field (127 bytes and a NUL). */
const IMATRIX_STRING_BYTES = 127;

/** llama-quantize's options as the converters take them: type names in any case, overrides as `PATTERN=TYPE`. */
export interface LlamaQuantizeOptions {
  /** `--output-tensor-type`: output.weight's ggml type, whatever the file type. */
  readonly outputTensorType?: string | undefined;
  /** `--token-embedding-type`: token_embd.weight's ggml type, whatever the file type. */
  readonly tokenEmbeddingType?: string | undefined;
  /** `--pure`: no k-quant mixture; every quantizable tensor gets the file type's own type. */
  readonly pure?: boolean | undefined;
  /** `--tensor-type PATTERN=TYPE`, repeatable; the first pattern found in a tensor's name wins. */
  readonly tensorTypes?: readonly string[] | undefined;
}

/** Where an importance matrix came from, recorded as llama-quantize records it (quantize.imatrix.*). */
export interface ImatrixProvenance {
  /** The file name as the user gave it (llama-quantize writes the argument as typed). */
  readonly file: string;
  readonly datasets: readonly string[];
  readonly chunkCount: number;
  /** Entries in the file (quantize.imatrix.entries_count). */
  readonly entries: number;
}

/** The options as the policy takes them; USAGE errors name the flag and the value. */
export function typeOverridesOf(options: LlamaQuantizeOptions): TypeOverrides {
  return {
    outputTensorType: options.outputTensorType === undefined ? undefined : requireGgufTensorType('--output-tensor-type', options.outputTensorType),
    tokenEmbeddingType: options.tokenEmbeddingType === undefined ? undefined : requireGgufTensorType('--token-embedding-type', options.tokenEmbeddingType),
    pure: options.pure === true,
    tensorTypes: (options.tensorTypes ?? []).map((spec) => parseTensorTypeOverride(spec)),
  };
}

/**
 * Checks the chosen types and adds the warnings a user should see: a `--tensor-type` that matched no
 * tensor, options a float file type ignores, fallback types. A type given by `--output-tensor-type` or
 * `--token-embedding-type` gets no fallback (llama-quantize applies it as given), so one whose block does
 * not divide the rows is refused here, before any work.
 */
export function checkTypeChoices(
  fileType: GgufFileType,
  tensors: readonly PolicyTensor[],
  choices: readonly TensorTypeChoice[],
  overrides: TypeOverrides,
  options: LlamaQuantizeOptions,
  warnings: string[],
): void {
  for (const [index, choice] of choices.entries()) {
    const tensor = tensors[index] as PolicyTensor;
    if (choice.type === undefined) continue;
    const rowLength = tensor.ne[0] ?? 1;
    if (rowLength % GGML_TYPES[choice.type].blockElements !== 0) {
      const flag = choice.source === 'output-tensor-type' ? '--output-tensor-type' : choice.source === 'token-embedding-type' ? '--token-embedding-type' : 'type';
      throw new PolyquantError(
        ERROR_CODES.LIMIT,
        `${flag} ${choice.type}: ${tensor.name}'s rows of ${rowLength} are not whole ${GGML_TYPES[choice.type].blockElements}-element blocks`,
        { tensor: tensor.name, hint: `choose a type whose block size divides ${rowLength} (Q8_0, Q4_0 and the other 32-element types, or F16)` },
      );
    }
  }
  const quantized = GGML_TYPES[GGUF_FILE_TYPES[fileType].defaultType].blockElements > 1;
  const specs = options.tensorTypes ?? [];
  if (!quantized && (specs.length > 0 || overrides.pure)) {
    const given = [...(specs.length > 0 ? ['--tensor-type'] : []), ...(overrides.pure ? ['--pure'] : [])].join(' and ');
    warnings.push(`${given} change nothing in a ${fileType} file: llama-quantize applies them to quantized file types only`);
  } else {
    for (const [index, spec] of specs.entries()) {
      const matched = choices.filter((choice) => choice.override === index).length;
      const pattern = overrides.tensorTypes?.[index]?.pattern ?? spec;
      const shadowed = tensors.some((tensor, at) => choices[at]?.source === 'tensor-type' && new RegExp(pattern).test(tensor.name));
      if (matched === 0) {
        warnings.push(
          `--tensor-type ${spec} matched no tensor${shadowed ? ' that an earlier --tensor-type had not already claimed' : ''}: the pattern is a regular expression searched in GGUF tensor names such as blk.0.attn_qkv.weight, token_embd.weight, output.weight (see polyquant inspect FILE --tensors)`,
        );
      }
    }
  }
  const fallback = choices.flatMap((choice, index) => (choice.fallbackFrom === undefined ? [] : [`${(tensors[index] as PolicyTensor).name} ${choice.fallbackFrom} → ${choice.type}`]));
  if (fallback.length > 0) {
    warnings.push(
      `${fallback.length} tensor(s) have rows that their type's blocks do not divide and use llama-quantize's fallback types: ${fallback.slice(0, 6).join(', ')}${fallback.length > 6 ? ', …' : ''}`,
    );
  }
}

/** Every imatrix entry must fit its tensor's rows; entries for tensors the model lacks are reported. */
export function checkImatrix(imatrix: ReadonlyMap<string, Float32Array>, tensors: readonly { name: string; ne: readonly number[] }[], warnings: string[]): void {
  const byName = new Map(tensors.map((tensor) => [tensor.name, tensor]));
  for (const [name, weights] of imatrix) {
    const tensor = byName.get(name);
    if (tensor === undefined) {
      warnings.push(`the importance matrix has an entry for ${name}, which the model does not have`);
      continue;
    }
    if (weights.length !== tensor.ne[0]) {
      throw new PolyquantError(ERROR_CODES.USAGE, `importance weights have ${weights.length} entries; the rows have ${tensor.ne[0]} columns`, {
        tensor: name,
      });
    }
  }
}

/** UTF-8 `text` cut to at most `limit` bytes, at a character boundary (strncpy into char[128] would split one). */
function truncateUtf8(text: string, limit: number): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= limit) return text;
  let end = limit;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end -= 1;
  return new TextDecoder().decode(bytes.subarray(0, end));
}

/**
 * The KVs llama-quantize sets after copying the input's (llama_model_quantize_impl, then the imatrix
 * overrides of quantize.cpp), in its order. Each gguf_set_val_* removes the key and appends it again,
 * so callers drop these keys from the copied KVs first.
 */
export function closingKvs(fileType: GgufFileType, imatrix: ImatrixProvenance | undefined): GgufKV[] {
  const kvs: GgufKV[] = [
    { key: 'general.quantization_version', type: 'UINT32', value: GGML_QUANTIZATION_VERSION },
    { key: 'general.file_type', type: 'UINT32', value: GGUF_FILE_TYPES[fileType].id },
  ];
  if (imatrix !== undefined) {
    kvs.push({ key: 'quantize.imatrix.file', type: 'STRING', value: truncateUtf8(imatrix.file, IMATRIX_STRING_BYTES) });
    const dataset = imatrix.datasets[0];
    if (dataset !== undefined) kvs.push({ key: 'quantize.imatrix.dataset', type: 'STRING', value: truncateUtf8(dataset, IMATRIX_STRING_BYTES) });
    // LLAMA_KV_OVERRIDE_TYPE_INT is written as UINT32 (llama-quant.cpp, PR 14182).
    kvs.push({ key: 'quantize.imatrix.entries_count', type: 'UINT32', value: imatrix.entries });
    if (imatrix.chunkCount > 0) kvs.push({ key: 'quantize.imatrix.chunks_count', type: 'UINT32', value: imatrix.chunkCount });
  }
  return kvs;
}

/** A tensor of a plan whose quantization error is to be measured. */
export interface MeasuredTensor {
  readonly name: string;
  readonly type: GgmlTypeName;
  readonly ne: readonly number[];
  readonly bytes: number;
}

/**
 * Each tensor's quantization error against its float32 source (`floats(index)`: its rows in order, as
 * fresh chunks), tensor by tensor through the worker pool.
 */
export async function measureErrors<T extends MeasuredTensor>(
  planned: readonly T[],
  floats: (index: number) => AsyncIterable<Float32Array>,
  options: {
    imatrix?: ReadonlyMap<string, Float32Array> | undefined;
    workers?: number | undefined;
    onProgress?: ((done: number, total: number) => void) | undefined;
    /** Tensors copied as they are (requantizing, same type): their error is exactly zero, measured without quantizing. */
    unchanged?: ((index: number) => boolean) | undefined;
  },
): Promise<(T & { error: ErrorStatsResult })[]> {
  const pool = new QuantPool({ workers: options.workers });
  const total = planned.reduce((sum, tensor) => sum + tensor.bytes, 0);
  let done = 0;
  const measured: (T & { error: ErrorStatsResult })[] = [];
  try {
    for (const [index, tensor] of planned.entries()) {
      const stats = createErrorStats();
      const rowLength = tensor.ne[0] ?? 1;
      if (options.unchanged?.(index)) {
        for await (const chunk of floats(index)) stats.add(chunk, chunk);
        done += tensor.bytes;
        options.onProgress?.(done, total);
        measured.push({ ...tensor, error: stats.result() });
        continue;
      }
      // The pool takes each chunk's buffer; the originals wait here in order, at most maxInFlight of them.
      const originals: Float32Array[] = [];
      const kept = async function* (chunks: AsyncIterable<Float32Array>): AsyncIterable<Float32Array> {
        for await (const chunk of chunks) {
          originals.push(chunk.slice());
          yield chunk;
        }
      };
      const importance = options.imatrix?.get(tensor.name);
      for await (const bytes of pool.quantizeStream({ scheme: tensor.type, nPerRow: rowLength, importance, tensor: tensor.name }, kept(floats(index)))) {
        const original = originals.shift() as Float32Array;
        stats.add(original, dequantizeRows(tensor.type, bytes, rowLength, { tensor: tensor.name }));
        done += bytes.length;
        options.onProgress?.(done, total);
      }
      measured.push({ ...tensor, error: stats.result() });
    }
  } finally {
    await pool.close();
  }
  return measured;
}

/**
 * Writes a GGUF file whose tensors are encoded by `encode` with the quantizer pool, then closes the pool;
 * `onProgress` hears the bytes written of `total`. What convert.ts (HF input) and requantize.ts (GGUF input) share.
 */
export async function writeGgufThroughPool<Job extends Omit<GgufTensorToWrite, 'chunks'>>(
  out: string,
  kvs: readonly GgufKV[],
  jobs: readonly Job[],
  pool: QuantPool,
  encode: (job: Job) => AsyncIterable<Uint8Array>,
  total: number,
  onProgress: ((done: number, total: number) => void) | undefined,
): Promise<void> {
  let done = 0;
  const counted = async function* (chunks: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
    for await (const chunk of chunks) {
      yield chunk;
      done += chunk.length;
      onProgress?.(done, total);
    }
  };
  try {
    const tensors: GgufTensorToWrite[] = jobs.map((job) => ({ name: job.name, type: job.type, ne: job.ne, chunks: () => counted(encode(job)) }));
    await writeGguf(out, kvs, tensors);
  } finally {
    await pool.close();
  }
}
