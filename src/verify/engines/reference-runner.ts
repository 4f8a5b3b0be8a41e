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
import {
  activationSlots,
  inputProductSlots,
  type LayerOffsets,
  type ModelLayout,
  PRODUCT_BLOCK_ROWS,
  packedTriangleSize,
  type WorkspaceOffsets,
} from './reference-layout.js';
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

/** What a calibration request does with each linear layer's input as the forward pass produces it. */
interface InputCollector {
  /** `rows` input rows of `width` floats at byte offset `source`: the input of slot `slot` (activationSlots order). */
  observe(slot: number, source: number, rows: number, width: number): void;
}

/** squaredInputs: Σ x² per input column, each square exact in double, summed in position order. */
class SquareCollector implements InputCollector {
  readonly squares: Float64Array;
  private readonly starts: Int32Array;

  constructor(
    private readonly floats: Float32Array,
    layout: ModelLayout,
    head: boolean,
  ) {
    const slots = activationSlots(layout, head);
    const last = slots[slots.length - 1];
    this.squares = new Float64Array(last === undefined ? 0 : last.offset + last.columns);
    this.starts = Int32Array.from(slots, (slot) => slot.offset);
  }

  observe(slot: number, source: number, rows: number, width: number): void {
    const squares = this.squares;
    const floats = this.floats;
    const at = this.starts[slot] as number;
    let row = source / 4;
    for (let r = 0; r < rows; r += 1, row += width) {
      for (let j = 0; j < width; j += 1) {
        const x = floats[row + j] as number;
        squares[at + j] = (squares[at + j] as number) + x * x;
      }
    }
  }
}

/**
 * inputProducts: Σ x xᵀ per linear layer's input, as packed lower triangles (inputProductSlots). Off the
 * diagonal, each step's Xᵀ X comes from the SIMD matrix kernel (float32 products summed in float32 over
 * the step's tokens, at most stepTokens of them) and is added into float64 totals; the diagonal is
 * squaredInputs' exact double sums, so it equals the importance matrix to the last bit. The kernel is
 * 17× faster than a double-precision rank-1 update per token in JavaScript (K = 1024, 256 tokens: 16 ms
 * against 287 ms), and float32 sums over at most 256 tokens stay within a few float32 ulps of exact.
 */
class ProductCollector implements InputCollector {
  readonly products: Float64Array;
  private readonly diagonal: SquareCollector;
  /** Where each slot's diagonal sits in the squares. */
  private readonly squareStarts: Int32Array;
  /** Where each slot's triangle starts in the products. */
  private readonly starts: Int32Array;
  private readonly input: number;
  private readonly block: number;

  constructor(
    private readonly floats: Float32Array,
    private readonly kernels: MatrixKernels,
    layout: ModelLayout,
    workspace: WorkspaceOffsets,
    head: boolean,
  ) {
    if (workspace.productInput === undefined || workspace.productBlock === undefined) {
      throw new Error('inputProducts needs a layout planned with inputProducts');
    }
    this.input = workspace.productInput;
    this.block = workspace.productBlock;
    const slots = inputProductSlots(layout, head);
    const last = slots[slots.length - 1];
    this.products = new Float64Array(last === undefined ? 0 : last.offset + packedTriangleSize(last.columns));
    this.starts = Int32Array.from(slots, (slot) => slot.offset);
    this.squareStarts = Int32Array.from(activationSlots(layout, head), (slot) => slot.offset);
    this.diagonal = new SquareCollector(floats, layout, head);
  }

  observe(slot: number, source: number, rows: number, width: number): void {
    this.diagonal.observe(slot, source, rows, width);
    const floats = this.floats;
    const products = this.products;
    // Xᵀ: column j of the step's rows becomes row j, `rows` floats long.
    const input = this.input / 4;
    const from = source / 4;
    for (let r = 0; r < rows; r += 1) {
      const row = from + r * width;
      for (let j = 0; j < width; j += 1) floats[input + j * rows + r] = floats[row + j] as number;
    }
    const at = this.starts[slot] as number;
    const block = this.block / 4;
    for (let first = 0; first < width; first += PRODUCT_BLOCK_ROWS) {
      const blockRows = Math.min(PRODUCT_BLOCK_ROWS, width - first);
      // Rows first … first + blockRows − 1 against columns 0 … their last row: the lower triangle and the
      // block's own small upper corner, which is not kept.
      this.kernels.matmul(this.input + first * rows * 4, rows, this.input, rows, this.block, width, blockRows, first + blockRows, rows);
      for (let i = 0; i < blockRows; i += 1) {
        const row = first + i;
        const packed = at + (row * (row + 1)) / 2;
        const out = block + i * width;
        for (let j = 0; j < row; j += 1) products[packed + j] = (products[packed + j] as number) + (floats[out + j] as number);
      }
    }
  }

  /** The totals with the exact diagonal in place. */
  finish(): Float64Array {
    const { squares } = this.diagonal;
    for (let slot = 0; slot < this.starts.length; slot += 1) {
      const at = this.starts[slot] as number;
      const from = this.squareStarts[slot] as number;
      const columns = (this.squareStarts[slot + 1] ?? squares.length) - from;
      // Row i's diagonal is its last packed value: i(i + 1)/2 + i.
      for (let row = 0; row < columns; row += 1) this.products[at + (row * (row + 3)) / 2] = squares[from + row] as number;
    }
    return this.products;
  }
}

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
   * Set only while squaredInputs or inputProducts runs: sees each linear layer's input. The normal path
   * pays one undefined check per linear layer and step.
   */
  private collector: InputCollector | undefined;

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
  }

  /**
   * Calibration: runs `tokens` from position 0 on an empty cache and returns, for every linear layer
   * quantizers weigh, the sum over all positions of each input column squared (activationSlots lays the
   * result out; the output head's input only with `head`, and the head itself is not computed). This is
   * what llama-imatrix's collect_imatrix adds up for one chunk. Each square is exact in double and the
   * sums run in position order in double, so a chunk's sums do not depend on the step size.
   */
  squaredInputs(tokens: Int32Array, head: boolean): Float64Array {
    const collector = new SquareCollector(this.floats, this.layout, head);
    this.collect(tokens, head, collector);
    return collector.squares;
  }

  /**
   * Calibration Hessians: as squaredInputs, but for every linear layer's input the whole Σ_t x_t x_tᵀ over
   * all positions, as the packed lower triangle of each K × K matrix (inputProductSlots lays the result
   * out). The diagonal is exactly squaredInputs'; off it, float32 products summed in float32 within a
   * step and in float64 across steps. Needs a layout planned with `inputProducts`.
   */
  inputProducts(tokens: Int32Array, head: boolean): Float64Array {
    const collector = new ProductCollector(this.floats, this.kernels, this.layout, this.workspace, head);
    this.collect(tokens, head, collector);
    return collector.finish();
  }

  /** Runs `tokens` from position 0 with `collector` seeing every linear layer's input (and the head's, with `head`). */
  private collect(tokens: Int32Array, head: boolean, collector: InputCollector): void {
    const { stepTokens, hidden, layers } = this.layout;
    this.collector = collector;
    try {
      for (let done = 0; done < tokens.length; done += stepTokens) {
        const count = Math.min(stepTokens, tokens.length - done);
        this.forwardStep(tokens, done, count, done);
        if (head) {
          this.finalNorm(0, count);
          collector.observe(4 * layers, this.workspace.normed, count, hidden);
        }
      }
    } finally {
      this.collector = undefined;
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
      if (this.collector !== undefined) this.collector.observe(4 * layer, ws.normed, count, hidden);
      this.attention(layer, offsets, count, position0);
      if (this.collector !== undefined) this.collector.observe(4 * layer + 1, ws.context, count, hidden);
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
    if (this.collector !== undefined) this.collector.observe(4 * layer + 2, ws.normed, rows, hidden);
    this.linear(ws.normed, offsets.upWeight, offsets.upBias, ws.mlpHidden, rows, hidden, intermediate);
    applyGelu(this.floats, ws.mlpHidden / 4, rows * intermediate, activation);
    if (this.collector !== undefined) this.collector.observe(4 * layer + 3, ws.mlpHidden, rows, intermediate);
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
