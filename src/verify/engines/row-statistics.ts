/**
 * Log-softmax of logits rows for engines that return raw logits (onnx, webgpu), computed exactly as the
 * reference engine computes it from its own logits: the row's maximum, argmax and top-k by
 * reference-math.ts, Σ exp(x − max) by the reference engine's WebAssembly kernel (double accumulation,
 * within 2 ulp of Math.exp) on a one-row buffer the row is copied into (float16 widened). So a row of logits
 * gets the reference engine's log-sum-exp bit for bit.
 */
import { f16ToF32Array } from '../../tensor/float.js';
import { rowMaximum, topKOfRow } from './reference-math.js';
import { MatrixKernels, sharedMemory } from './reference-wasm.js';

export class RowStatistics {
  readonly row: Float32Array;
  private readonly kernels: MatrixKernels;
  private readonly kept: Uint8Array;

  constructor(private readonly vocab: number) {
    const memory = sharedMemory(Math.max(1, Math.ceil((vocab * 4) / 65536)));
    this.kernels = new MatrixKernels(memory);
    this.row = new Float32Array(memory.buffer, 0, vocab);
    this.kept = new Uint8Array(vocab);
  }

  /** Loads row `index` of a [rows × vocab] logits array; returns its log Σ exp and argmax. */
  load(data: Float32Array | Uint16Array, index: number): { logSumExp: number; argmax: number } {
    const vocab = this.vocab;
    const source = data.subarray(index * vocab, (index + 1) * vocab);
    if (source instanceof Float32Array) this.row.set(source);
    else f16ToF32Array(source, this.row);
    const { max, argmax } = rowMaximum(this.row, 0, vocab);
    if (!Number.isFinite(max)) return { logSumExp: max, argmax };
    return { logSumExp: max + Math.log(this.kernels.sumExp(0, vocab, max)), argmax };
  }

  /** Top-k of the loaded row (see topKOfRow); returns the log of the rest's mass. */
  topK(k: number, logSumExp: number, ids: Int32Array, logProbs: Float32Array, outOffset: number): number {
    return topKOfRow(this.row, 0, this.vocab, k, logSumExp, ids, logProbs, outOffset, this.kept);
  }
}
