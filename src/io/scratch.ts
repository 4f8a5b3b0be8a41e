/**
 * A small pool of reusable byte buffers for streaming reads. Fresh memory costs a page fault per 4 KiB
 * the first time it is touched; streaming 7.6 GB through a new buffer per tensor spends more time
 * faulting than copying (BENCHMARKS.md). Buffers are checked out and returned, so concurrent streams never
 * share one; the pool keeps only a few, so it holds at most MAX_POOLED_BYTES.
 */

const MAX_POOLED_BUFFERS = 4;
/** Beyond this a buffer is not kept: a one-off huge row should not pin memory for the process's life. */
const MAX_POOLED_BYTES = 64 * 1024 * 1024;

const pool: Buffer[] = [];

/** A buffer of at least `size` bytes (its contents are garbage). Give it back with releaseScratch. */
export function acquireScratch(size: number): Buffer {
  let best = -1;
  for (let i = 0; i < pool.length; i += 1) {
    const candidate = pool[i] as Buffer;
    if (candidate.length >= size && (best < 0 || candidate.length < (pool[best] as Buffer).length)) best = i;
  }
  if (best >= 0) return pool.splice(best, 1)[0] as Buffer;
  return Buffer.allocUnsafeSlow(size);
}

export function releaseScratch(buffer: Buffer): void {
  if (buffer.length > MAX_POOLED_BYTES) return;
  pool.push(buffer);
  if (pool.length > MAX_POOLED_BUFFERS) {
    // Drop the smallest: the large ones are the expensive ones to fault in again.
    let smallest = 0;
    for (let i = 1; i < pool.length; i += 1) if ((pool[i] as Buffer).length < (pool[smallest] as Buffer).length) smallest = i;
    pool.splice(smallest, 1);
  }
}
