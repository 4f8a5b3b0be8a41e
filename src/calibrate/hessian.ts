/**
 * Calibration Hessians for GPTQ (quant/gptq.ts): for every linear layer a quantizer rounds, the second
 * moment of its input over calibration text, H = Σ_t x_t x_tᵀ / count (K × K for K input columns). GPTQ
 * feeds each column's rounding error forward through H⁻¹; an importance matrix (imatrix.ts) is only H's
 * diagonal, so this pass also yields one (hessianImatrix), and the two agree exactly on it.
 *
 * Same definition of the data as imatrix.ts, on purpose, so one calibration run means the same thing for
 * both: the same chunks (prepareCalibration and cutChunks, shared), every position of every chunk, the
 * same four inputs per block (query_key_value, attention.dense, dense_h_to_4h, dense_4h_to_h) and, with
 * `head`, the output head's input. Per chunk the reference engine returns the packed lower triangle of each
 * Σ x xᵀ (ReferenceRunner.inputProducts: the diagonal squaredInputs' exact double sums, off it float32
 * products from the SIMD matrix kernel summed in float32 within a step of at most 256 tokens and in double
 * across steps); chunks are added in chunk order, never in the order workers finish, so the result is the
 * same bytes whatever the thread count.
 *
 * Memory is what limits this, not time: K² doubles per matrix (polyglot-ko-1.3b's 96 matrices would take
 * 15 GiB), plus a half-size triangle per chunk in flight and the running totals. hessianBytes computes it
 * before anything loads, and models over `maxBytes` are refused.
 */
import { NEOX_TENSORS, type NeoXConfig, type NeoXTensorRole } from '../arch/gpt-neox.js';
import { ggufTensorName } from '../converters/gguf/names.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import type { Checkpoint, WeightsPreference } from '../readers/checkpoint.js';
import { createReferenceEngine, type ReferenceEngine, referenceEngineParallelism } from '../verify/engines/reference.js';
import { activationSlots, type ActivationSlot, packedTriangleSize } from '../verify/engines/reference-layout.js';
import { cutChunks, type ImatrixEntry, type ImatrixText, prepareCalibration } from './imatrix.js';

/**
 * The default ceiling on the memory the Hessians take (hessianBytes): 4 GiB, which every machine that
 * runs the reference engine's own 4 GiB memory next to it can be expected to have again.
 */
export const HESSIAN_DEFAULT_MAX_BYTES = 4 * 2 ** 30;

export interface HessianOptions {
  /** Calibration text files (UTF-8), chunked exactly as `polyquant imatrix` chunks them. */
  readonly texts: readonly string[];
  /** Tokens per chunk; default 512, or max_position_embeddings when that is less (as imatrix). */
  readonly ctx?: number;
  /** At most this many chunks, in file order; default all. */
  readonly chunks?: number;
  /** Reference-engine worker threads, one chunk each at a time; default the engine's default. */
  readonly threads?: number;
  /** Also the output head's input (the final LayerNorm's output), keyed `embed_out.weight`. */
  readonly head?: boolean;
  readonly weights?: WeightsPreference;
  /** Refuse (LIMIT) when hessianBytes exceeds this; default HESSIAN_DEFAULT_MAX_BYTES. */
  readonly maxBytes?: number;
  /** Chunks done of all chunks (0 of N once the texts are tokenized). */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface HessianEntry {
  /** The weight's role and block (null for the output head), for mapping to other formats' names. */
  readonly role: ActivationSlot['role'];
  readonly layer: number | null;
  /** K: the weight's input columns. */
  readonly columns: number;
  /** Σ x xᵀ / count over every token of every chunk: K × K row-major, full symmetric, float64. */
  readonly matrix: Float64Array;
  /** Positions summed (chunkCount × chunkSize). */
  readonly count: number;
}

export interface HessianResult {
  /**
   * Keyed by HF tensor name, in model order: gpt_neox.layers.N.attention.query_key_value.weight,
   * gpt_neox.layers.N.attention.dense.weight, gpt_neox.layers.N.mlp.dense_h_to_4h.weight,
   * gpt_neox.layers.N.mlp.dense_4h_to_h.weight per block, then embed_out.weight with `head`.
   */
  readonly entries: ReadonlyMap<string, HessianEntry>;
  readonly chunkCount: number;
  readonly chunkSize: number;
  /** Positions run through the model (chunkCount × chunkSize). */
  readonly tokens: number;
  readonly texts: readonly ImatrixText[];
  /** Seconds spent running chunks (tokenizing and loading excluded). */
  readonly seconds: number;
  readonly warnings: readonly string[];
  readonly engine: { readonly name: 'reference'; readonly threads: number };
}

/** What the Hessians of a model take in memory, as hessianBytes counts it. */
export interface HessianMemory {
  /** The result: K² float64 per matrix. */
  readonly matrices: number;
  /** The running totals (packed lower triangles) plus one chunk's triangles per chunk in flight. */
  readonly working: number;
  readonly total: number;
}

/**
 * Bytes the Hessians take at their peak: the full matrices of the result, the packed running totals, and
 * one chunk's packed triangles for each of `parallelism` chunks in flight (a worker's accumulator, or a
 * finished chunk waiting for the ones before it).
 */
export function hessianBytes(config: Pick<NeoXConfig, 'hiddenSize' | 'intermediateSize' | 'numLayers'>, head: boolean, parallelism: number): HessianMemory {
  const slots = activationSlots({ hidden: config.hiddenSize, intermediate: config.intermediateSize, layers: config.numLayers }, head);
  let square = 0;
  let packed = 0;
  for (const slot of slots) {
    square += slot.columns * slot.columns;
    packed += packedTriangleSize(slot.columns);
  }
  const matrices = 8 * square;
  const working = 8 * packed * (1 + parallelism);
  return { matrices, working, total: matrices + working };
}

/** Computes the calibration Hessians of an HF GPT-NeoX folder (or an opened checkpoint) over calibration text. */
export async function computeHessians(source: string | Checkpoint, options: HessianOptions): Promise<HessianResult> {
  const maxBytes = options.maxBytes ?? HESSIAN_DEFAULT_MAX_BYTES;
  if (!(typeof maxBytes === 'number' && maxBytes > 0)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `maxBytes ${maxBytes} must be a positive number of bytes`);
  }
  const { checkpoint, ctx, chunkLimit, bos, engineOptions } = await prepareCalibration(
    source,
    options,
    { inputProducts: true },
    () =>
      'the calibration Hessians come from the reference engine, whose float32 weights must fit one 4 GiB WebAssembly memory (about 1 B parameters); ' +
      'for larger models use an importance matrix from llama-imatrix (convert --imatrix), which needs no Hessian',
  );
  const { config } = checkpoint;
  const warnings: string[] = [];
  // Tied embeddings: the head's weight is the token embedding, a row lookup that no format quantizes as a matmul weight.
  const head = options.head === true && !config.tieWordEmbeddings;
  if (options.head === true && !head) warnings.push('the output head is tied to the token embedding: no Hessian for it');

  const parallelism = referenceEngineParallelism(engineOptions);
  const memory = hessianBytes(config, head, parallelism);
  if (memory.total > maxBytes) {
    throw new PolyquantError(
      ERROR_CODES.LIMIT,
      `the calibration Hessians of ${config.numLayers} layers (hidden ${config.hiddenSize}, intermediate ${config.intermediateSize}) need ${binaryBytes(memory.total)} ` +
        `(${memory.total} bytes: ${binaryBytes(memory.matrices)} of K × K float64 matrices, ${binaryBytes(memory.working)} of totals and ${parallelism} ${parallelism === 1 ? 'chunk' : 'chunks'} in flight), ` +
        `over the limit of ${binaryBytes(maxBytes)} (${maxBytes} bytes)`,
      {
        file: checkpoint.dir,
        hint: 'raise maxBytes if the machine has the memory, lower threads to hold fewer chunks at once, or weigh by an importance matrix (diagonal only) instead',
      },
    );
  }

  const cut = await cutChunks(checkpoint, options.texts, ctx, chunkLimit, bos);
  const engine = await createReferenceEngine(checkpoint, engineOptions);
  try {
    return await runChunks(engine, checkpoint, options, cut.windows, { ctx, head, texts: cut.texts, warnings: [...warnings, ...cut.warnings] });
  } finally {
    await engine.close();
  }
}

interface ChunkPlan {
  readonly ctx: number;
  readonly head: boolean;
  readonly texts: readonly ImatrixText[];
  readonly warnings: readonly string[];
}

async function runChunks(engine: ReferenceEngine, checkpoint: Checkpoint, options: HessianOptions, windows: readonly Int32Array[], plan: ChunkPlan): Promise<HessianResult> {
  const { ctx, head, texts, warnings } = plan;
  const slots = engine.inputProductSlots(head);
  // One running total per matrix, so each can be dropped once its full matrix is built.
  const totals = slots.map((slot) => new Float64Array(packedTriangleSize(slot.columns)));
  const started = performance.now();
  options.onProgress?.(0, windows.length);
  // One chunk per worker at a time (not imatrix's two): each holds half a Hessian set, which hessianBytes counts.
  const inFlight = new Map<number, Promise<Float64Array>>();
  let next = 0;
  const submit = (): void => {
    while (next < windows.length && inFlight.size < engine.parallelism) {
      inFlight.set(next, engine.inputProducts(windows[next] as Int32Array, { head }));
      next += 1;
    }
  };
  try {
    for (let index = 0; index < windows.length; index += 1) {
      submit();
      const products = await (inFlight.get(index) as Promise<Float64Array>);
      inFlight.delete(index);
      slots.forEach((slot, slotIndex) => {
        const total = totals[slotIndex] as Float64Array;
        const chunk = products.subarray(slot.offset, slot.offset + total.length);
        let finite = true;
        for (let i = 0; i < total.length; i += 1) {
          const value = chunk[i] as number;
          total[i] = (total[i] as number) + value;
          // x − x is 0 for every finite x and NaN for ±∞ and NaN.
          if (value - value !== 0) finite = false;
        }
        if (!finite) {
          throw new PolyquantError(ERROR_CODES.CHECK_FAILED, `non-finite activations in chunk ${index + 1}`, {
            file: checkpoint.dir,
            tensor: hfTensorName(slot.role, slot.layer),
            hint: 'the model overflows float32 on this text',
          });
        }
      });
      options.onProgress?.(index + 1, windows.length);
    }
  } finally {
    // On an error the engine is closed by the caller, which rejects what is still queued; nothing to await.
    for (const pending of inFlight.values()) pending.catch(() => {});
  }
  const seconds = (performance.now() - started) / 1000;

  const count = windows.length * ctx;
  const entries = new Map<string, HessianEntry>();
  slots.forEach((slot, slotIndex) => {
    const K = slot.columns;
    const total = totals[slotIndex] as Float64Array;
    const matrix = new Float64Array(K * K);
    for (let i = 0; i < K; i += 1) {
      const row = (i * (i + 1)) / 2;
      for (let j = 0; j <= i; j += 1) {
        const value = (total[row + j] as number) / count;
        matrix[i * K + j] = value;
        matrix[j * K + i] = value;
      }
    }
    totals[slotIndex] = new Float64Array(0);
    entries.set(hfTensorName(slot.role, slot.layer), { role: slot.role, layer: slot.layer, columns: K, matrix, count });
  });
  return {
    entries,
    chunkCount: windows.length,
    chunkSize: ctx,
    tokens: count,
    texts,
    seconds,
    warnings,
    engine: { name: 'reference', threads: engine.parallelism },
  };
}

/** Bytes as MiB under a GiB, GiB from there, two decimals. */
function binaryBytes(bytes: number): string {
  return bytes < 2 ** 30 ? `${(bytes / 2 ** 20).toFixed(2)} MiB` : `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

/** The HF name of a weight role in block `layer` (arch/gpt-neox.ts NEOX_TENSORS). */
function hfTensorName(role: NeoXTensorRole, layer: number | null): string {
  const row = NEOX_TENSORS.find((candidate) => candidate.role === role);
  if (row === undefined) throw new Error(`no GPT-NeoX tensor has role ${role}`);
  return row.hfName.replace('{layer}', String(layer ?? 0));
}

/**
 * The importance matrix the Hessians imply, keyed by GGUF name as computeImatrix keys it: Σ x² per column
 * (the diagonal × count, in float32) and the count. The diagonal is computed as imatrix computes its sums,
 * so one calibration pass serves GPTQ and `--imatrix`-style K-quant weighting alike (importanceOf takes
 * the result's entries as they are).
 */
export function hessianImatrix(result: Pick<HessianResult, 'entries'>): Map<string, ImatrixEntry> {
  const named = [...result.entries.values()].map((entry) => ({ name: ggufTensorName(entry.role, entry.layer), entry }));
  // Name order, as computeImatrix (and llama-imatrix) sort their entries.
  named.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const out = new Map<string, ImatrixEntry>();
  for (const { name, entry } of named) {
    const { columns: K, matrix, count } = entry;
    out.set(name, { sums: Float32Array.from({ length: K }, (_, i) => (matrix[i * K + i] as number) * count), count });
  }
  return out;
}
