/**
 * The inputs of a sweep's calibrated cells (`q4_k_m+imatrix`, `q4_k_m+gptq`, `q4+gptq`, `q4f16_1+gptq`;
 * grid.ts): one calibration pass per sweep process (calibrate/hessian.ts, the output head included), made
 * when the first calibrated cell runs — never when every calibrated cell of the run is already done — and
 * shared by all of them. `+gptq` cells take the Hessians; `+imatrix` cells their diagonals as the
 * importance matrix, which is the one `polyquant imatrix` computes from the same chunks (hessianImatrix),
 * so a `+imatrix` cell is `convert --calibrate TEXT` and a GGUF `+gptq` cell `convert --calibrate TEXT
 * --optimize`.
 *
 * A calibration that fails (a model whose Hessians exceed their memory bound, text too short) fails once:
 * every calibrated cell gets the same error, the other cells run.
 */
import { basename, resolve } from 'node:path';
import { computeHessians, type HessianEntry, hessianImatrix } from '../calibrate/hessian.js';
import { importanceOf } from '../calibrate/imatrix.js';
import type { ImatrixProvenance } from '../converters/gguf/llama-quantize-options.js';

export interface SweepCalibrationOptions {
  /** Calibration text files (UTF-8), chunked as `polyquant imatrix` chunks them. */
  readonly texts: readonly string[];
  /** At most this many chunks (default all). */
  readonly chunks?: number | undefined;
  /** Reference-engine threads. */
  readonly threads?: number | undefined;
}

export interface SweepCalibrationResult {
  /** GPTQ's Hessians by HF tensor name (the head's included). */
  readonly hessians: ReadonlyMap<string, HessianEntry>;
  /** The importance matrix by GGUF name, as `--imatrix` takes it (the Hessians' diagonals). */
  readonly imatrix: ReadonlyMap<string, Float32Array>;
  /** What a GGUF quantized with `imatrix` records (quantize.imatrix.*), as `convert --calibrate` records it. */
  readonly imatrixProvenance: ImatrixProvenance;
  /** What a calibrated ONNX model or WebGPU folder records of its calibration. */
  readonly provenance: Readonly<Record<string, unknown>>;
  readonly chunkCount: number;
  readonly chunkSize: number;
  /** Seconds the pass took. */
  readonly seconds: number;
}

export class SweepCalibration {
  private pending: Promise<SweepCalibrationResult> | undefined;
  private onProgress: ((done: number, total: number) => void) | undefined;

  constructor(
    private readonly model: string,
    private readonly options: SweepCalibrationOptions,
  ) {}

  /** Whether the pass has started (so its seconds belong to this run). */
  get started(): boolean {
    return this.pending !== undefined;
  }

  /** The calibration, computed on the first call; `onProgress` hears chunks done of all chunks while it runs. */
  get(onProgress?: (done: number, total: number) => void): Promise<SweepCalibrationResult> {
    this.onProgress = onProgress;
    this.pending ??= this.compute();
    return this.pending;
  }

  private async compute(): Promise<SweepCalibrationResult> {
    const started = performance.now();
    const result = await computeHessians(this.model, {
      texts: this.options.texts,
      head: true,
      ...(this.options.chunks !== undefined && { chunks: this.options.chunks }),
      ...(this.options.threads !== undefined && { threads: this.options.threads }),
      onProgress: (done, total) => this.onProgress?.(done, total),
    });
    const imatrix = importanceOf({ entries: hessianImatrix(result) });
    const datasets = this.options.texts.map((text) => resolve(text));
    return {
      hessians: result.entries,
      imatrix,
      imatrixProvenance: { file: 'polyquant sweep --calibrate', datasets, chunkCount: result.chunkCount, entries: imatrix.size },
      provenance: { datasets: this.options.texts.map((text) => basename(text)), chunk_count: result.chunkCount, chunk_size: result.chunkSize, tokens: result.tokens },
      chunkCount: result.chunkCount,
      chunkSize: result.chunkSize,
      seconds: (performance.now() - started) / 1000,
    };
  }
}
