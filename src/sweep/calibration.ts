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
 * every cell that needs it gets the same error, the other cells run. Models past the reference engine:
 * `+imatrix` cells take the importance matrix from llama.cpp (calibrate/imatrix-llamacpp.ts); `+gptq`
 * cells need Hessians, which are refused there.
 */
import { basename, resolve } from 'node:path';
import { computeHessians, type HessianEntry, hessianImatrix } from '../calibrate/hessian.js';
import { computeImatrix, importanceOf } from '../calibrate/imatrix.js';
import type { ImatrixProvenance } from '../converters/gguf/llama-quantize-options.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';

export interface SweepCalibrationOptions {
  /** Calibration text files (UTF-8), chunked as `polyquant imatrix` chunks them. */
  readonly texts: readonly string[];
  /** At most this many chunks (default all). */
  readonly chunks?: number | undefined;
  /** Reference-engine threads. */
  readonly threads?: number | undefined;
}

export interface SweepCalibrationResult {
  /** GPTQ's Hessians by HF tensor name (the head's included); undefined from an imatrix-only pass. */
  readonly hessians: ReadonlyMap<string, HessianEntry> | undefined;
  /** The importance matrix by GGUF name, as `--imatrix` takes it. */
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
  private hessianPass: Promise<SweepCalibrationResult> | undefined;
  private imatrixPass: Promise<SweepCalibrationResult> | undefined;
  private onProgress: ((done: number, total: number) => void) | undefined;

  /**
   * `gptq`: whether this run has `+gptq` cells to compute. Then one Hessian pass serves every calibrated
   * cell (the imatrix is its diagonals); without, `+imatrix` cells take computeImatrix alone, which also
   * reaches models past the reference engine (llama.cpp on their f16 GGUF) — as does an `+imatrix` cell
   * whose model's Hessians are refused.
   */
  constructor(
    private readonly model: string,
    private readonly options: SweepCalibrationOptions & { readonly gptq: boolean; readonly cacheDir?: string | undefined },
  ) {}

  /** The passes this run started, each settled (their seconds and chunks), for SweepRun.calibration. */
  async spent(): Promise<{ seconds: number; chunks: number; chunkSize: number } | null> {
    const results: SweepCalibrationResult[] = [];
    for (const pass of [this.hessianPass, this.imatrixPass]) {
      if (pass === undefined) continue;
      try {
        results.push(await pass);
      } catch {
        // A failed pass: its cells carry the error.
      }
    }
    const first = results[0];
    if (first === undefined) return null;
    return { seconds: results.reduce((sum, result) => sum + result.seconds, 0), chunks: first.chunkCount, chunkSize: first.chunkSize };
  }

  /** The calibration a `method` cell takes, computed on the first call; `onProgress` hears chunks done of all while it runs. */
  async get(method: 'imatrix' | 'gptq', onProgress?: (done: number, total: number) => void): Promise<SweepCalibrationResult> {
    this.onProgress = onProgress;
    if (method === 'gptq' || (this.options.gptq && this.imatrixPass === undefined)) {
      this.hessianPass ??= this.computeHessians();
      if (method === 'gptq') return this.hessianPass;
      try {
        return await this.hessianPass;
      } catch (error) {
        // A model whose Hessians do not fit may still take an importance matrix.
        if (!(error instanceof PolyquantError && error.code === ERROR_CODES.LIMIT)) throw error;
      }
    }
    this.imatrixPass ??= this.computeImatrix();
    return this.imatrixPass;
  }

  private async computeHessians(): Promise<SweepCalibrationResult> {
    const started = performance.now();
    const result = await computeHessians(this.model, {
      texts: this.options.texts,
      head: true,
      ...(this.options.chunks !== undefined && { chunks: this.options.chunks }),
      ...(this.options.threads !== undefined && { threads: this.options.threads }),
      onProgress: (done, total) => this.onProgress?.(done, total),
    });
    return this.describe(result.entries, importanceOf({ entries: hessianImatrix(result) }), result, (performance.now() - started) / 1000);
  }

  private async computeImatrix(): Promise<SweepCalibrationResult> {
    const started = performance.now();
    const result = await computeImatrix(this.model, {
      texts: this.options.texts,
      ...(this.options.chunks !== undefined && { chunks: this.options.chunks }),
      ...(this.options.threads !== undefined && { threads: this.options.threads }),
      ...(this.options.cacheDir !== undefined && { cacheDir: this.options.cacheDir }),
      onProgress: (done, total) => this.onProgress?.(done, total),
    });
    return this.describe(undefined, importanceOf(result), result, (performance.now() - started) / 1000);
  }

  private describe(
    hessians: ReadonlyMap<string, HessianEntry> | undefined,
    imatrix: ReadonlyMap<string, Float32Array>,
    pass: { readonly chunkCount: number; readonly chunkSize: number; readonly tokens: number },
    seconds: number,
  ): SweepCalibrationResult {
    return {
      hessians,
      imatrix,
      imatrixProvenance: { file: 'polyquant sweep --calibrate', datasets: this.options.texts.map((text) => resolve(text)), chunkCount: pass.chunkCount, entries: imatrix.size },
      provenance: { datasets: this.options.texts.map((text) => basename(text)), chunk_count: pass.chunkCount, chunk_size: pass.chunkSize, tokens: pass.tokens },
      chunkCount: pass.chunkCount,
      chunkSize: pass.chunkSize,
      seconds,
    };
  }
}
