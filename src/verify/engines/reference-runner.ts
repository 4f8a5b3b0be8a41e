/**
 * The GPT-NeoX forward pass of the reference engine, on one workspace of the shared memory. It runs
 * wherever it is constructed: in a worker thread (the engine's normal mode) or inline on the caller's
 * thread (`threads: 0`). The arithmetic follows transformers' modeling_gpt_neox.py (GPTNeoXForCausalLM)
 * step by step, in float32 storage with double-precision scalar maths and float32 SIMD dot products;
 * see reference-wasm.ts for the summation order that makes every result independent of how a sequence
 * is split into steps or continued from the KV cache.
 */
import { allocateScoreResult, type DistributionMode, type ScoreResult, } from '../engine.js';
import { rotaryTables } from '../../arch/gpt-neox.js';
import { activationSlots, type LayerOffsets, type ModelLayout, type WorkspaceOffsets } from './reference-layout.js';
import { applyGelu, applyRotary, layerNormRow, rowMaximum, topKOfRow } from './reference-math.js';
import { MatrixKernels, type WasmMemory } from './reference-wasm.js';

const fround = Math.fround;

export interface ScoreRequest {
  readonly tokens: Int32Array;
  readonly from: number;
  readonly distributions: DistributionMode;
  readonly topK: number;
}

/** What the head does with each scored row of logits: the row's position and its offset in the float view. */
type RowSink = (position: number, logitsOffset: number) => void;

export class ReferenceRunner {
  private readonly kernels: MatrixKernels;
  private readonly floats: Float32Array;
  private readonly workspace: WorkspaceOffsets;
  private readonly cos: Float32Array;
  private readonly sin: Float32Array;
  /** 1/√headDim as a float32, as HF's attention scales the scores (norm_factor). */
  private readonly scale: number;
  private keptScratch: Uint8Array | undefined;
  /**
   * Set only while squaredInputs runs: Σ x² per column of each linear layer's input. The normal path
   * pays one undefined check per linear layer and step.
   */
  private squares: Float64Array | undefined;
  /** Where each layer's four input slots start in a squaredInputs result ([layer × 4], activationSlots order). */
  private readonly slotStarts: Int32Array;

  constructor(
    memory: WasmMemory,
    private readonly layout: ModelLayout,
    workspaceIndex: number,
  ) {
    const workspace = layout.workspaces[workspaceIndex];
    if (workspace === undefined) throw new Error(`workspace ${workspaceIndex} is not in the layout`);
    this.workspace = workspace;
    this.kernels = new MatrixKernels(memory);
    this.floats = new Float32Array(memory.buffer);
    const tables = rotaryTables(layout.rotaryDims, layout.rotaryBase, layout.contextLength);
    this.cos = tables.cos;
    this.sin = tables.sin;
    this.scale = fround(1 / Math.sqrt(layout.headDim));
    this.slotStarts = Int32Array.from(activationSlots(layout, false), (slot) => slot.offset);
  }

  /**
   * Calibration: runs `tokens` from position 0 on an empty cache and returns, for every linear layer
   * quantizers weigh, the sum over all positions of each input column squared (activationSlots lays the
   * result out; the output head's input only with `head`, and the head itself is not computed). This is
   * what llama-imatrix's collect_imatrix adds up for one chunk. Each square is exact in double and the
   * sums run in position order in double, so a chunk's sums do not depend on the step size.
   */
  squaredInputs(tokens: Int32Array, head: boolean): Float64Array {
    const { stepTokens, hidden } = this.layout;
    const slots = activationSlots(this.layout, head);
    const last = slots[slots.length - 1];
    const squares = new Float64Array(last === undefined ? 0 : last.offset + last.columns);
    const headOffset = head ? (last as (typeof slots)[number]).offset : -1;
    this.squares = squares;
    try {
      for (let done = 0; done < tokens.length; done += stepTokens) {
        const count = Math.min(stepTokens, tokens.length - done);
        this.forwardStep(tokens, done, count, done);
        if (head) {
          this.finalNorm(0, count);
          this.observe(headOffset, this.workspace.normed, count, hidden);
        }
      }
    } finally {
      this.squares = undefined;
    }
    return squares;
  }

  /** Adds the squares of `rows` input rows of `width` floats at byte offset `source` to squares[at …]. */
  private observe(at: number, source: number, rows: number, width: number): void {
    const squares = this.squares as Float64Array;
    const floats = this.floats;
    let row = source / 4;
    for (let r = 0; r < rows; r += 1, row += width) {
      for (let j = 0; j < width; j += 1) {
        const x = floats[row + j] as number;
        squares[at + j] = (squares[at + j] as number) + x * x;
      }
    }
  }

  /** Log-probabilities of tokens[from …] given everything before each (the Engine.score contract). */
  score(request: ScoreRequest): ScoreResult {
    const { tokens, from, distributions, topK } = request;
    const { vocab } = this.layout;
    const scored = Math.max(0, tokens.length - from);
    const result = allocateScoreResult(scored, vocab, distributions, topK);
    const { tokenLogProbs, argmax, full, topk } = result;
    if (scored === 0) return result;

    const floats = this.floats;
    const sink: RowSink = (position, logitsOffset) => {
      const index = position - (from - 1);
      const summary = this.summariseRow(logitsOffset);
      tokenLogProbs[index] = (floats[logitsOffset + (tokens[position + 1] as number)] as number) - summary.logSumExp;
      argmax[index] = summary.argmax;
      if (full !== undefined) {
        const row = index * vocab;
        for (let id = 0; id < vocab; id += 1) full[row + id] = (floats[logitsOffset + id] as number) - summary.logSumExp;
      }
      if (topk !== undefined) {
        this.keptScratch ??= new Uint8Array(vocab);
        topk.restLogMass[index] = topKOfRow(floats, logitsOffset, vocab, topk.k, summary.logSumExp, topk.ids, topk.logProbs, index * topk.k, this.keptScratch);
      }
    };
    // The last token is only ever a target: positions 0 … n − 2 are the inputs.
    this.run(tokens, 0, tokens.length - 1, 0, from - 1, sink);
    return { tokenLogProbs, argmax, ...(full && { full }), ...(topk && { topk }) };
  }

  /** Raw output-head logits at every position of `tokens`: [tokens.length × vocab]. */
  logits(tokens: Int32Array): Float32Array {
    const { vocab } = this.layout;
    const out = new Float32Array(tokens.length * vocab);
    this.run(tokens, 0, tokens.length, 0, 0, (position, logitsOffset) => {
      out.set(this.floats.subarray(logitsOffset, logitsOffset + vocab), position * vocab);
    });
    return out;
  }

  /**
   * Summed log-likelihood of each continuation after `context`: the context runs once; each continuation
   * then runs from position context.length on the cached keys and values, overwriting the previous
   * continuation's (the cache is truncated back by position, nothing is copied).
   */
  scoreContinuations(context: Int32Array, continuations: readonly Int32Array[]): number[] {
    const { vocab } = this.layout;
    const floats = this.floats;
    const contextLength = context.length;
    let lastRow: Float32Array | undefined;
    let lastLogSumExp = 0;
    this.run(context, 0, contextLength, 0, contextLength - 1, (_position, logitsOffset) => {
      lastRow = floats.slice(logitsOffset, logitsOffset + vocab);
      lastLogSumExp = this.summariseRow(logitsOffset).logSumExp;
    });
    const first = lastRow as Float32Array;
    return continuations.map((continuation) => {
      if (continuation.length === 0) return 0;
      let total = (first[continuation[0] as number] as number) - lastLogSumExp;
      this.run(continuation, 0, continuation.length - 1, contextLength, contextLength, (position, logitsOffset) => {
        const target = continuation[position - contextLength + 1] as number;
        total += (floats[logitsOffset + target] as number) - this.summariseRow(logitsOffset).logSumExp;
      });
      return total;
    });
  }

  /**
   * log Σ exp(logit) of a vocabulary row (shifted by its maximum, exponentials and sum in double) and its
   * argmax. `offset` indexes the float view.
   */
  private summariseRow(offset: number): { logSumExp: number; argmax: number } {
    const { vocab } = this.layout;
    const { max, argmax } = rowMaximum(this.floats, offset, vocab);
    if (!Number.isFinite(max)) return { logSumExp: max, argmax };
    return { logSumExp: max + Math.log(this.kernels.sumExp(offset * 4, vocab, max)), argmax };
  }

  /**
   * Runs tokens[start … start + count) at positions position0 … through the model in steps, and hands the
   * output-head logits of every position ≥ headFrom to `sink` in order.
   */
  private run(tokens: Int32Array, start: number, count: number, position0: number, headFrom: number, sink: RowSink): void {
    const { stepTokens, headChunk, vocab, hidden } = this.layout;
    const { normed, logits } = this.workspace;
    for (let done = 0; done < count; done += stepTokens) {
      const stepCount = Math.min(stepTokens, count - done);
      const stepPosition = position0 + done;
      this.forwardStep(tokens, start + done, stepCount, stepPosition);
      const firstRow = Math.max(0, headFrom - stepPosition);
      for (let row = firstRow; row < stepCount; row += headChunk) {
        const rows = Math.min(headChunk, stepCount - row);
        this.finalNorm(row, rows);
        this.kernels.matmul(normed + row * hidden * 4, hidden, this.layout.embedOut, hidden, logits, vocab, rows, vocab, hidden);
        for (let r = 0; r < rows; r += 1) sink(stepPosition + row + r, logits / 4 + r * vocab);
      }
    }
  }

  /** GPTNeoXModel up to (not including) final_layer_norm, for one step of tokens; leaves `residual`. */
  private forwardStep(tokens: Int32Array, start: number, count: number, position0: number): void {
    const { hidden, intermediate, layerOffsets, parallelResidual, activation } = this.layout;
    const floats = this.floats;
    const ws = this.workspace;
    const residual = ws.residual / 4;
    const embedIn = this.layout.embedIn / 4;
    // embed_in (emb_dropout is identity at inference).
    for (let i = 0; i < count; i += 1) {
      const token = tokens[start + i] as number;
      floats.copyWithin(residual + i * hidden, embedIn + token * hidden, embedIn + (token + 1) * hidden);
    }
    for (let layer = 0; layer < layerOffsets.length; layer += 1) {
      const offsets = layerOffsets[layer] as LayerOffsets;
      this.normRows(ws.residual, ws.normed, count, offsets.inputNormWeight, offsets.inputNormBias);
      if (this.squares !== undefined) this.observe(this.slotStarts[4 * layer] as number, ws.normed, count, hidden);
      this.attention(layer, offsets, count, position0);
      if (this.squares !== undefined) this.observe(this.slotStarts[4 * layer + 1] as number, ws.context, count, hidden);
      // attn_output = dense(context)
      this.linear(ws.context, offsets.denseWeight, offsets.denseBias, ws.attention, count, hidden, hidden);
      const attention = ws.attention / 4;
      const mlpOutput = ws.mlpOutput / 4;
      const size = count * hidden;
      if (parallelResidual) {
        // GPTNeoXLayer: hidden = mlp(post_attention_layernorm(x)) + attn_output + x, left to right in float32.
        this.normRows(ws.residual, ws.normed, count, offsets.postAttentionNormWeight, offsets.postAttentionNormBias);
        this.mlp(layer, offsets, count, intermediate, activation);
        for (let i = 0; i < size; i += 1) {
          const sum = fround((floats[mlpOutput + i] as number) + (floats[attention + i] as number));
          floats[residual + i] = sum + (floats[residual + i] as number);
        }
      } else {
        // attn_output = attn_output + x; hidden = mlp(post_attention_layernorm(attn_output)) + attn_output.
        for (let i = 0; i < size; i += 1) floats[attention + i] = (floats[attention + i] as number) + (floats[residual + i] as number);
        this.normRows(ws.attention, ws.normed, count, offsets.postAttentionNormWeight, offsets.postAttentionNormBias);
        this.mlp(layer, offsets, count, intermediate, activation);
        for (let i = 0; i < size; i += 1) floats[residual + i] = (floats[mlpOutput + i] as number) + (floats[attention + i] as number);
      }
    }
  }

  /** final_layer_norm on rows [row, row + rows) of the residual stream, into the same rows of `normed`. */
  private finalNorm(row: number, rows: number): void {
    const { hidden } = this.layout;
    const shift = row * hidden * 4;
    this.normRows(this.workspace.residual + shift, this.workspace.normed + shift, rows, this.layout.finalNormWeight, this.layout.finalNormBias);
  }

  private normRows(source: number, target: number, rows: number, weight: number, bias: number): void {
    const { hidden, layerNormEps } = this.layout;
    const floats = this.floats;
    for (let row = 0; row < rows; row += 1) {
      layerNormRow(floats, source / 4 + row * hidden, floats, target / 4 + row * hidden, hidden, floats, weight / 4, floats, bias / 4, layerNormEps);
    }
  }

  /** nn.Linear: output = input·Wᵀ + bias, rows × outFeatures. */
  private linear(input: number, weight: number, bias: number, output: number, rows: number, inFeatures: number, outFeatures: number): void {
    this.kernels.matmul(input, inFeatures, weight, inFeatures, output, outFeatures, rows, outFeatures, inFeatures);
    const floats = this.floats;
    const out = output / 4;
    const b = bias / 4;
    for (let row = 0; row < rows; row += 1) {
      const base = out + row * outFeatures;
      for (let j = 0; j < outFeatures; j += 1) floats[base + j] = (floats[base + j] as number) + (floats[b + j] as number);
    }
  }

  /** GPTNeoXMLP of block `layer`: dense_4h_to_h(act(dense_h_to_4h(normed))) into mlpOutput. */
  private mlp(layer: number, offsets: LayerOffsets, rows: number, intermediate: number, activation: ModelLayout['activation']): void {
    const { hidden } = this.layout;
    const ws = this.workspace;
    if (this.squares !== undefined) this.observe(this.slotStarts[4 * layer + 2] as number, ws.normed, rows, hidden);
    this.linear(ws.normed, offsets.upWeight, offsets.upBias, ws.mlpHidden, rows, hidden, intermediate);
    applyGelu(this.floats, ws.mlpHidden / 4, rows * intermediate, activation);
    if (this.squares !== undefined) this.observe(this.slotStarts[4 * layer + 3] as number, ws.mlpHidden, rows, intermediate);
    this.linear(ws.mlpHidden, offsets.downWeight, offsets.downBias, ws.mlpOutput, rows, intermediate, hidden);
  }

  /**
   * GPTNeoXAttention up to (not including) `dense`: QKV projection, rotary on the first rotaryDims of each
   * head's q and k, the new keys and values appended to the cache, then causal softmax attention per head.
   * Leaves the merged heads in `context`.
   */
  private attention(layer: number, offsets: LayerOffsets, count: number, position0: number): void {
    const { hidden, heads, headDim, rotaryDims, contextLength, contextStride, queryBlock } = this.layout;
    const floats = this.floats;
    const ws = this.workspace;
    const rowLength = 3 * hidden;
    this.linear(ws.normed, offsets.qkvWeight, offsets.qkvBias, ws.qkv, count, hidden, rowLength);
    const qkv = ws.qkv / 4;
    const keys = ws.keys / 4 + layer * contextLength * hidden;
    const values = ws.values / 4 + layer * hidden * contextStride;
    const half = rotaryDims / 2;
    for (let i = 0; i < count; i += 1) {
      const position = position0 + i;
      const row = qkv + i * rowLength;
      if (rotaryDims > 0) {
        for (let head = 0; head < heads; head += 1) {
          applyRotary(floats, row + head * headDim, rotaryDims, this.cos, this.sin, position * half);
          applyRotary(floats, row + hidden + head * headDim, rotaryDims, this.cos, this.sin, position * half);
        }
      }
      floats.copyWithin(keys + position * hidden, row + hidden, row + 2 * hidden);
      for (let d = 0; d < hidden; d += 1) floats[values + d * contextStride + position] = floats[row + 2 * hidden + d] as number;
    }
    const scores = ws.scores;
    for (let head = 0; head < heads; head += 1) {
      for (let block = 0; block < count; block += queryBlock) {
        const queries = Math.min(queryBlock, count - block);
        // Keys 0 … keyCount − 1 cover the block's last query; earlier queries mask the surplus.
        const keyCount = position0 + block + queries;
        this.kernels.matmul(
          ws.qkv + (block * rowLength + head * headDim) * 4,
          rowLength,
          ws.keys + (layer * contextLength * hidden + head * headDim) * 4,
          hidden,
          scores,
          contextStride,
          queries,
          keyCount,
          headDim,
        );
        // Probabilities past each query's own position are exact zeros, up to a multiple of 4 keys, so the
        // value product sums every key in its own lane whatever keyCount is (reference-wasm.ts).
        const paddedKeys = Math.ceil(keyCount / 4) * 4;
        for (let q = 0; q < queries; q += 1) this.softmaxRow(scores / 4 + q * contextStride, position0 + block + q + 1, paddedKeys);
        this.kernels.matmul(
          scores,
          contextStride,
          ws.values + (layer * hidden * contextStride + head * headDim * contextStride) * 4,
          contextStride,
          ws.context + (block * hidden + head * headDim) * 4,
          hidden,
          queries,
          headDim,
          paddedKeys,
        );
      }
    }
  }

  /**
   * softmax(scores·scale) over the first `visible` keys of a row, zeros up to `padded`: HF fills masked
   * scores with finfo(float32).min, whose exp underflows to exactly 0.
   */
  private softmaxRow(offset: number, visible: number, padded: number): void {
    const floats = this.floats;
    const scale = this.scale;
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < visible; j += 1) {
      const scaled = fround((floats[offset + j] as number) * scale);
      floats[offset + j] = scaled;
      if (scaled > max) max = scaled;
    }
    let sum = 0;
    for (let j = 0; j < visible; j += 1) {
      const e = Math.exp((floats[offset + j] as number) - max);
      floats[offset + j] = e;
      sum += e;
    }
    // The exponentials are summed in double; each weight is then within an ulp or two of exact.
    const inverse = 1 / sum;
    for (let j = 0; j < visible; j += 1) floats[offset + j] = (floats[offset + j] as number) * inverse;
    floats.fill(0, offset + visible, offset + padded);
  }
}
