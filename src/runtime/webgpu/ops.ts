/// <reference types="@webgpu/types" />
/**
 * One function per kernel that records its dispatches (with their uniforms and bindings) into a Recorder,
 * and the choice of kernel variant for a shape. The model (model.ts) strings these together; the tests
 * call them one by one against CPU oracles.
 */
import { flatGrid, type GpuContext, type Recorder } from './gpu.js';
import {
  type Activation,
  type Epilogue,
  gatherShader,
  layerNormShader,
  type MatmulVariant,
  matmulShader,
  matmulUniform,
  ropeShader,
  scoresShader,
  softmaxShader,
  valuesShader,
} from './kernels.js';
import type { WeightMatrix } from './weights.js';

export interface MatmulCall {
  readonly x: GPUBuffer;
  readonly y: GPUBuffer;
  /** Rows of x (tokens). */
  readonly T: number;
  readonly bias?: GPUBuffer | undefined;
  readonly epilogue?: Epilogue;
  /** The residual read by `add` / `add-accumulate`. */
  readonly r?: GPUBuffer | undefined;
  readonly activation?: Activation;
  /** Force a kernel (tests): default `tile` with 8 rows for T ≥ 8, 4 below; for T = 1 `split` on hardware, `tile` with 1 row on software. */
  readonly kind?: 'tile' | 'split';
  readonly tileRows?: 1 | 4 | 8;
}

/** The variant `call` runs for `matrix` on this context. */
export function matmulVariant(context: GpuContext, matrix: WeightMatrix, call: Pick<MatmulCall, 'T' | 'bias' | 'epilogue' | 'activation' | 'kind' | 'tileRows'>): MatmulVariant {
  const vector = matrix.K % 8 === 0;
  const maxColumns = Math.max(...matrix.windows.map((window) => window.rowCount));
  const splitFits = Math.ceil(maxColumns / 4) <= context.maxWorkgroupsPerDimension;
  const wantSplit = call.kind === 'split' || (call.kind === undefined && context.family === 'hardware' && call.T === 1);
  const kind = wantSplit && vector && splitFits && call.T === 1 ? 'split' : 'tile';
  return {
    weight: matrix.format,
    scale: matrix.scale,
    kind,
    // 8 tokens per invocation halve the weight reads of 4 (measured 20–40 % faster on SwiftShader at T = 64).
    tileRows: call.tileRows ?? (call.T === 1 ? 1 : call.T < 8 ? 4 : 8),
    vector,
    bias: call.bias !== undefined,
    epilogue: call.epilogue ?? 'store',
    activation: call.activation ?? 'gelu-erf',
    workgroupSize: context.workgroupSize,
  };
}

export function matmulSource(context: GpuContext, matrix: WeightMatrix, call: Pick<MatmulCall, 'T' | 'bias' | 'epilogue' | 'activation' | 'kind' | 'tileRows'>): string {
  return matmulShader(matmulVariant(context, matrix, call));
}

/** y[t, n] = epilogue(x[t, :] · W[n, :]) for all N columns (one dispatch per binding window). */
export function recordMatmul(recorder: Recorder, context: GpuContext, matrix: WeightMatrix, call: MatmulCall): void {
  const variant = matmulVariant(context, matrix, call);
  const source = matmulShader(variant);
  for (const window of matrix.windows) {
    const uniform = matmulUniform({
      T: call.T,
      K: matrix.K,
      nStart: window.rowStart,
      nCount: window.rowCount,
      yStride: matrix.N,
      groups: matrix.groups,
      wordsPerRow: matrix.wordsPerRow,
    });
    const bindings: Record<number, GPUBuffer | { buffer: GPUBuffer; offset: number; size: number }> = { 1: call.x, 2: window.weight, 6: call.y };
    if (window.scales !== undefined) bindings[3] = window.scales;
    if (call.bias !== undefined) bindings[4] = call.bias;
    if (variant.epilogue === 'add' || variant.epilogue === 'add-accumulate') {
      if (call.r === undefined) throw new Error('internal: an add epilogue needs r');
      bindings[5] = call.r;
    }
    const columnTiles = Math.ceil(window.rowCount / 4);
    const workgroups: [number, number] =
      variant.kind === 'split' ? [columnTiles, 1] : [Math.ceil(columnTiles / variant.workgroupSize), Math.ceil(call.T / variant.tileRows)];
    recorder.dispatch(source, uniform, bindings, workgroups);
  }
}

export function gatherSource(context: GpuContext, matrix: WeightMatrix): string {
  return gatherShader(matrix.format, matrix.scale, context.workgroupSize);
}

/** out[t, :] = E[tokens[tokenOffset + t], :], dequantized (one dispatch per window). */
export function recordGather(recorder: Recorder, context: GpuContext, matrix: WeightMatrix, tokens: GPUBuffer, tokenOffset: number, T: number, out: GPUBuffer): void {
  const source = gatherSource(context, matrix);
  const grid = flatGrid(T * matrix.K, context.workgroupSize, context.maxWorkgroupsPerDimension);
  for (const window of matrix.windows) {
    const uniform = Uint32Array.of(T, matrix.K, window.rowStart, window.rowCount, tokenOffset, matrix.groups, matrix.wordsPerRow, 0);
    const bindings: Record<number, GPUBuffer | { buffer: GPUBuffer; offset: number; size: number }> = { 1: tokens, 2: window.weight, 6: out };
    if (window.scales !== undefined) bindings[3] = window.scales;
    recorder.dispatch(source, uniform, bindings, grid);
  }
}

export function layerNormSource(context: GpuContext): string {
  return layerNormShader(context.family, context.workgroupSize);
}

export function recordLayerNorm(
  recorder: Recorder,
  context: GpuContext,
  x: GPUBuffer,
  y: GPUBuffer,
  weight: GPUBuffer,
  bias: GPUBuffer,
  rows: number,
  H: number,
  eps: number,
): void {
  const uniform = new Uint32Array(4);
  uniform[0] = rows;
  uniform[1] = H;
  new Float32Array(uniform.buffer)[2] = eps;
  const workgroups: [number] = context.family === 'software' ? [Math.ceil(rows / context.workgroupSize)] : [rows];
  recorder.dispatch(layerNormSource(context), uniform, { 1: x, 2: weight, 3: bias, 6: y }, workgroups);
}

export function ropeSource(context: GpuContext): string {
  return ropeShader(context.workgroupSize);
}

export interface AttentionShape {
  readonly T: number;
  readonly past: number;
  readonly H: number;
  readonly headDim: number;
  readonly heads: number;
  readonly rotaryDims: number;
  /** The cache capacity: rows of keys/values, and the row stride of the scores. */
  readonly capacity: number;
}

/** Rotary on q (in place) and k, k and v appended to the cache at positions past … past + T − 1. */
export function recordRope(
  recorder: Recorder,
  context: GpuContext,
  shape: AttentionShape,
  qkv: GPUBuffer,
  keys: GPUBuffer,
  values: GPUBuffer,
  cos: GPUBuffer,
  sin: GPUBuffer,
): void {
  const uniform = Uint32Array.of(shape.T, shape.past, shape.H, shape.headDim, shape.rotaryDims / 2, shape.rotaryDims, 0, 0);
  const grid = flatGrid(shape.T * shape.H, context.workgroupSize, context.maxWorkgroupsPerDimension);
  recorder.dispatch(ropeSource(context), uniform, { 1: qkv, 2: keys, 3: values, 4: cos, 5: sin }, grid);
}

export const SCORES_SOURCE = scoresShader();
export const VALUES_SOURCE = valuesShader();
export function softmaxSource(context: GpuContext): string {
  return softmaxShader(context.workgroupSize);
}

/** Causal attention of the step's queries over the cache: scores, softmax, value product → context [T, H]. */
export function recordAttention(
  recorder: Recorder,
  context: GpuContext,
  shape: AttentionShape,
  qkv: GPUBuffer,
  keys: GPUBuffer,
  values: GPUBuffer,
  scores: GPUBuffer,
  out: GPUBuffer,
): void {
  const uniform = new Uint32Array(8);
  uniform.set([shape.T, shape.past, shape.H, shape.headDim, shape.heads, shape.capacity]);
  // HF multiplies the scores by head_size^-0.5 as a float32 (the reference engine's norm factor).
  new Float32Array(uniform.buffer)[6] = Math.fround(1 / Math.sqrt(shape.headDim));
  const keyTiles = Math.ceil((shape.past + shape.T) / 4);
  const queryTiles = Math.ceil(shape.T / 4);
  recorder.dispatch(SCORES_SOURCE, uniform, { 1: qkv, 2: keys, 6: scores }, [Math.ceil(keyTiles / 16), queryTiles, shape.heads]);
  recorder.dispatch(softmaxSource(context), uniform, { 6: scores }, [Math.ceil((shape.heads * shape.T) / context.workgroupSize)]);
  recorder.dispatch(VALUES_SOURCE, uniform, { 1: scores, 2: values, 6: out }, [Math.ceil(shape.H / 4 / 64), queryTiles]);
}
