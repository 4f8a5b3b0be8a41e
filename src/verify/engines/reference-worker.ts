/**
 * A reference-engine worker thread: maps the shared memory (weights + its own workspace), then answers
 * one request at a time. Requests and results cross as structured clones; result arrays are transferred.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { DistributionMode, ScoreResult } from '../engine.js';
import type { ModelLayout } from './reference-layout.js';
import { ReferenceRunner } from './reference-runner.js';
import type { WasmMemory } from './reference-wasm.js';

/** Marks workerData as ours: this module is also imported (for handleRequest) on threads that are not. */
export const WORKER_MARK = 'polyquant-reference-engine';

export interface WorkerInit {
  readonly mark: typeof WORKER_MARK;
  readonly memory: WasmMemory;
  readonly layout: ModelLayout;
  readonly workspace: number;
}

export type WorkerRequest =
  | {
      readonly id: number;
      readonly kind: 'score';
      readonly tokens: Int32Array;
      readonly from: number;
      readonly distributions: DistributionMode;
      readonly topK: number;
    }
  | { readonly id: number; readonly kind: 'continuations'; readonly context: Int32Array; readonly continuations: Int32Array[] }
  | { readonly id: number; readonly kind: 'logits'; readonly tokens: Int32Array }
  | { readonly id: number; readonly kind: 'squares'; readonly tokens: Int32Array; readonly head: boolean }
  | { readonly id: number; readonly kind: 'products'; readonly tokens: Int32Array; readonly head: boolean };

export type WorkerResponse =
  | {
      readonly id: number;
      readonly ok: true;
      readonly score?: ScoreResult;
      readonly sums?: number[];
      readonly logits?: Float32Array;
      readonly squares?: Float64Array;
      readonly products?: Float64Array;
    }
  | { readonly id: number; readonly ok: false; readonly message: string };

/** The buffers of a ScoreResult, to transfer rather than copy. */
export function scoreTransferList(result: ScoreResult): ArrayBuffer[] {
  const arrays = [result.tokenLogProbs, result.argmax, result.full, result.topk?.ids, result.topk?.logProbs, result.topk?.restLogMass];
  return arrays.filter((array) => array !== undefined).map((array) => array.buffer as ArrayBuffer);
}

export function handleRequest(runner: ReferenceRunner, request: WorkerRequest): { response: WorkerResponse; transfer: ArrayBuffer[] } {
  try {
    if (request.kind === 'score') {
      const score = runner.score(request);
      return { response: { id: request.id, ok: true, score }, transfer: scoreTransferList(score) };
    }
    if (request.kind === 'logits') {
      const logits = runner.logits(request.tokens);
      return { response: { id: request.id, ok: true, logits }, transfer: [logits.buffer as ArrayBuffer] };
    }
    if (request.kind === 'squares') {
      const squares = runner.squaredInputs(request.tokens, request.head);
      return { response: { id: request.id, ok: true, squares }, transfer: [squares.buffer as ArrayBuffer] };
    }
    if (request.kind === 'products') {
      const products = runner.inputProducts(request.tokens, request.head);
      return { response: { id: request.id, ok: true, products }, transfer: [products.buffer as ArrayBuffer] };
    }
    const sums = runner.scoreContinuations(request.context, request.continuations);
    return { response: { id: request.id, ok: true, sums }, transfer: [] };
  } catch (error) {
    const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
    return { response: { id: request.id, ok: false, message }, transfer: [] };
  }
}

if (parentPort !== null && (workerData as Partial<WorkerInit> | undefined)?.mark === WORKER_MARK) {
  const port = parentPort;
  const init = workerData as WorkerInit;
  const runner = new ReferenceRunner(init.memory, init.layout, init.workspace);
  port.on('message', (request: WorkerRequest) => {
    const { response, transfer } = handleRequest(runner, request);
    port.postMessage(response, transfer);
  });
  port.postMessage('ready');
}
