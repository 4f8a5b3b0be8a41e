/** The worker side of QuantPool: one task = whole rows of float32 in, their quantized bytes out. */
import { Piscina } from 'piscina';
import { PolyquantError } from '../errors.js';
import { quantizeRows } from './api.js';
import type { GgmlTypeName } from './ggml-types.js';

export interface QuantTask {
  readonly scheme: GgmlTypeName;
  readonly src: Float32Array;
  readonly nPerRow: number;
  readonly importance: Float32Array | undefined;
  readonly tensor: string | undefined;
}

/** A PolyquantError crossing the thread boundary as data (class identity does not survive cloning). */
export interface QuantTaskFailure {
  readonly failure: ReturnType<PolyquantError['toJSON']>;
}

export default function quantizeTask(task: QuantTask): unknown {
  try {
    const out = quantizeRows(task.scheme, task.src, task.nPerRow, { importance: task.importance, tensor: task.tensor });
    // Hand the output buffer back without a copy.
    return Piscina.move(out);
  } catch (error) {
    if (error instanceof PolyquantError) return { failure: error.toJSON() } satisfies QuantTaskFailure;
    throw error;
  }
}
