import { afterAll, describe, expect, it } from 'vitest';
import { PolyquantError } from '../src/errors.js';
import { quantizeRows } from '../src/quant/api.js';
import type { GgmlTypeName } from '../src/quant/ggml-types.js';
import { QuantPool } from '../src/quant/pool.js';
import { type StoredRows, widenInto } from '../src/tensor/widen.js';
import { mulberry32 } from './helpers/safetensors-fixtures.js';

function normalRows(rows: number, nPerRow: number, seed: number): Float32Array {
  const random = mulberry32(seed);
  const out = new Float32Array(rows * nPerRow);
  for (let i = 0; i < out.length; i += 1) {
    // Box-Muller: normal(0, 0.02) with the odd outlier from the tails.
    out[i] = 0.02 * Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  }
  return out;
}

function* chunksOf(data: Float32Array, nPerRow: number, rowsPerChunk: number): Iterable<Float32Array> {
  for (let row = 0; row * nPerRow < data.length; row += rowsPerChunk) {
    // slice: each chunk owns its buffer, since the pool transfers it to a worker.
    yield data.slice(row * nPerRow, Math.min(data.length, (row + rowsPerChunk) * nPerRow));
  }
}

async function collect(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(Buffer.from(part));
  return Buffer.concat(parts);
}

const pools = [new QuantPool({ workers: 0 }), new QuantPool({ workers: 1 }), new QuantPool({ workers: 2 }), new QuantPool({ workers: 3, maxInFlight: 2 })];
afterAll(async () => {
  await Promise.all(pools.map((pool) => pool.close()));
});

describe('the quantization worker pool', () => {
  const schemes: GgmlTypeName[] = ['Q8_0', 'Q4_0', 'Q4_K', 'Q6_K', 'IQ4_XS'];
  for (const scheme of schemes) {
    it(`gives ${scheme} bytes identical to a single-threaded pass for 0, 1, 2 and 3 workers`, async () => {
      const nPerRow = 512;
      const data = normalRows(37, nPerRow, 11);
      const expected = Buffer.from(quantizeRows(scheme, data, nPerRow));
      for (const pool of pools) {
        const got = await collect(pool.quantizeStream({ scheme, nPerRow }, chunksOf(data, nPerRow, 5)));
        expect(got.equals(expected), `${pool.workers} workers`).toBe(true);
      }
    });
  }

  it('never has more than maxInFlight chunks outstanding', async () => {
    const pool = pools[3] as QuantPool;
    let pulled = 0;
    let consumed = 0;
    let maxAhead = 0;
    const data = normalRows(40, 256, 3);
    const source = (function* () {
      for (const chunk of chunksOf(data, 256, 2)) {
        pulled += 1;
        maxAhead = Math.max(maxAhead, pulled - consumed);
        yield chunk;
      }
    })();
    for await (const _ of pool.quantizeStream({ scheme: 'Q4_0', nPerRow: 256 }, source)) consumed += 1;
    expect(consumed).toBe(20);
    expect(maxAhead).toBeLessThanOrEqual(pool.maxInFlight);
  });

  it('passes importance weights through to the workers', async () => {
    const nPerRow = 256;
    const data = normalRows(8, nPerRow, 5);
    const importance = Float32Array.from({ length: nPerRow }, (_, i) => 1 + (i % 7));
    const expected = Buffer.from(quantizeRows('Q4_K', data, nPerRow, { importance }));
    const got = await collect((pools[2] as QuantPool).quantizeStream({ scheme: 'Q4_K', nPerRow, importance }, chunksOf(data, nPerRow, 3)));
    expect(got.equals(expected)).toBe(true);
    expect(got.equals(Buffer.from(quantizeRows('Q4_K', data, nPerRow)))).toBe(false);
  });

  it('rethrows a worker’s PolyquantError as a PolyquantError naming the tensor', async () => {
    const pool = pools[2] as QuantPool;
    const attempt = collect(pool.quantizeStream({ scheme: 'Q4_K', nPerRow: 100, tensor: 'blk.0.ffn_up.weight' }, [new Float32Array(100)]));
    await expect(attempt).rejects.toBeInstanceOf(PolyquantError);
    await expect(attempt).rejects.toThrow(/blk\.0\.ffn_up\.weight.*multiple of its block size 256/);
  });
});

describe('the pool with rows as the checkpoint stores them', () => {
  it('widens fp16 and bf16 rows on its threads to the same bytes as float32 input', async () => {
    const nPerRow = 256;
    const rows = 24;
    const halves = new Uint16Array(rows * nPerRow);
    const random = mulberry32(11);
    // Finite halves and bf16 values (exponent below all-ones), so both readings are ordinary numbers.
    for (let i = 0; i < halves.length; i += 1) halves[i] = Math.floor(random() * 0x7800) | (random() < 0.5 ? 0x8000 : 0);
    for (const dtype of ['F16', 'BF16'] as const) {
      const floats = widenInto(new Uint8Array(halves.buffer), dtype, new Float32Array(halves.length), undefined);
      const expected = Buffer.from(quantizeRows('Q4_K', floats, nPerRow));
      for (const pool of pools) {
        const stored = function* (): Iterable<StoredRows> {
          for (let row = 0; row < rows; row += 5) {
            const part = halves.slice(row * nPerRow, Math.min(rows, row + 5) * nPerRow);
            yield { dtype, bytes: new Uint8Array(part.buffer) };
          }
        };
        const actual = await collect(pool.quantizeStream({ scheme: 'Q4_K', nPerRow }, stored()));
        expect(actual.equals(expected), `${dtype}, ${pool.workers} workers`).toBe(true);
      }
    }
  });
});
