/**
 * Rows as a checkpoint stores them (f16/bf16) are widened inside WebAssembly on the quantizer threads
 * (runtime.ts `wasmWiden` / `wasmStoredQuantizer`): the widening must give src/tensor/widen.ts's bits for
 * every one of the 65,536 half patterns, and the stored-rows path the bytes of widening in JavaScript and
 * then quantizing, for every type with a WebAssembly kernel, with and without importance weights; and chunks
 * read into the pool's shared slots are quantized in place.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { GGML_TYPE_NAMES, GGML_TYPES, quantizeRows } from '../src/quant/index.js';
import { QuantPool, type RowChunk } from '../src/quant/pool.js';
import { quantizeStoredChunk } from '../src/quant/pool-worker.js';
import { wasmQuantizer, wasmWiden } from '../src/quant/wasm/runtime.js';
import { widenRows } from '../src/tensor/widen.js';
import { createRandom } from './helpers/quant-random.js';

const EVERY_HALF = new Uint8Array(new Uint16Array(65536).map((_, i) => i).buffer);

describe('WebAssembly widening of stored rows', () => {
  for (const dtype of ['F16', 'BF16'] as const) {
    it(`gives the JavaScript widening's bits for all 65,536 ${dtype} patterns, NaN payloads included`, () => {
      const ours = wasmWiden(EVERY_HALF, dtype, new Float32Array(65536));
      const reference = widenRows({ dtype, bytes: EVERY_HALF }, 'x');
      const bits = (values: Float32Array): Buffer => Buffer.from(values.buffer, values.byteOffset, values.byteLength);
      const first = ours.findIndex((_, i) => !bits(ours.subarray(i, i + 1)).equals(bits(reference.subarray(i, i + 1))));
      expect(bits(ours).equals(bits(reference)), `first difference at half 0x${first.toString(16)}`).toBe(true);
    });

    it(`${dtype}: lengths that are not a multiple of 8 take the scalar tail`, () => {
      const bytes = EVERY_HALF.subarray(2 * 30001, 2 * 30014);
      expect(new Uint32Array(wasmWiden(bytes, dtype, new Float32Array(13)).slice().buffer)).toEqual(
        new Uint32Array(widenRows({ dtype, bytes: bytes.slice() }, 'x').buffer),
      );
    });
  }
});

describe('quantizing stored rows', () => {
  const random = createRandom(0x5eed);
  const nPerRow = 512;
  const rows = 24;
  const halves = new Uint16Array(rows * nPerRow);
  // Normal weights around 0.02 with a few large values, zeros and subnormals, as fp16 bits.
  for (let i = 0; i < halves.length; i++) {
    const pick = random.next();
    halves[i] = pick < 0.02 ? random.integer(0, 0x3ff) | (random.integer(0, 1) << 15) : pick < 0.05 ? 0 : (0x2000 + random.integer(0, 0x1fff)) | (random.integer(0, 1) << 15);
  }
  const bytes = new Uint8Array(halves.buffer);
  const importance = Float32Array.from({ length: nPerRow }, () => 10 ** random.integer(-3, 3) * random.next());
  const types = GGML_TYPE_NAMES.filter((type) => wasmQuantizer(GGML_TYPES[type]) !== undefined && nPerRow % GGML_TYPES[type].blockElements === 0);

  it('covers the legacy and K-quant kernels', () => {
    expect(types).toEqual(expect.arrayContaining(['Q8_0', 'Q4_0', 'Q4_K', 'Q6_K', 'F16', 'BF16']));
  });

  for (const dtype of ['F16', 'BF16'] as const) {
    it(`${dtype} rows: every type's bytes equal widen-then-quantize, with and without importance`, () => {
      const floats = widenRows({ dtype, bytes }, 'x');
      for (const type of types) {
        for (const weights of [undefined, importance]) {
          const expected = quantizeRows(type, floats, nPerRow, { importance: weights });
          const got = quantizeStoredChunk({ scheme: type, src: { dtype, bytes }, nPerRow, importance: weights, tensor: 'x' });
          expect(got, `${type} ${weights === undefined ? '' : 'with importance'}`).toBeDefined();
          expect(Buffer.from(got as Uint8Array).equals(Buffer.from(expected)), `${type} ${weights === undefined ? '' : 'with importance'}`).toBe(true);
        }
      }
    });
  }

  it('leaves what it cannot take (float32 rows, other layouts, ragged chunks) to the general path', () => {
    expect(quantizeStoredChunk({ scheme: 'Q8_0', src: widenRows({ dtype: 'F16', bytes }, 'x'), nPerRow, importance: undefined, tensor: 'x' })).toBeUndefined();
    expect(quantizeStoredChunk({ scheme: 'Q8_0', src: { dtype: 'F16', bytes: bytes.subarray(0, 1000) }, nPerRow, importance: undefined, tensor: 'x' })).toBeUndefined();
    expect(quantizeStoredChunk({ scheme: 'Q4_K', src: { dtype: 'F16', bytes }, nPerRow: 96, importance: undefined, tensor: 'x' })).toBeUndefined();
  });

  const pool = new QuantPool({ workers: 2 });
  afterAll(() => pool.close());

  it('the pool gives the same bytes for stored rows as for float32 rows', async () => {
    for (const type of ['Q8_0', 'Q4_K'] as const) {
      const fromFloats = await pool.quantize({ scheme: type, nPerRow, tensor: 'x' }, widenRows({ dtype: 'F16', bytes }, 'x'));
      const fromStored = await pool.quantize({ scheme: type, nPerRow, tensor: 'x' }, { dtype: 'F16', bytes: bytes.slice() });
      expect(Buffer.from(fromStored).equals(Buffer.from(fromFloats))).toBe(true);
    }
  });

  it('reads into shared slots that the threads quantize in place, and lends a slot again once released', async () => {
    const own = new QuantPool({ workers: 1 });
    const lent = own.buffer(bytes.length);
    expect(lent.buffer).toBeInstanceOf(SharedArrayBuffer);
    lent.set(bytes);
    const out = await own.quantize({ scheme: 'Q8_0', nPerRow, tensor: 'x' }, { dtype: 'F16', bytes: lent });
    expect(out.buffer).toBe(lent.buffer); // the output is written after the rows, in the same slot
    expect(Buffer.from(out).equals(Buffer.from(quantizeRows('Q8_0', widenRows({ dtype: 'F16', bytes }, 'x'), nPerRow)))).toBe(true);
    expect(own.buffer(bytes.length).buffer).not.toBe(lent.buffer); // still held
    own.release(out);
    expect(own.buffer(bytes.length).buffer).toBe(lent.buffer);
    await own.close();
  });

  it('streams chunks read into slots to the same bytes as ordinary buffers, through the fallback kernels too', async () => {
    const own = new QuantPool({ workers: 2, maxInFlight: 2 });
    const rowsPerChunk = 4;
    const chunkBytes = rowsPerChunk * nPerRow * 2;
    for (const scheme of ['Q4_K', 'Q4_0', 'F32'] as const) {
      const slotted = function* (): Iterable<RowChunk> {
        for (let at = 0; at < bytes.length; at += chunkBytes) {
          const view = own.buffer(Math.min(chunkBytes, bytes.length - at));
          view.set(bytes.subarray(at, at + view.length));
          yield { dtype: 'F16', bytes: view };
        }
      };
      const parts: Uint8Array[] = [];
      // Copy each chunk before asking for the next: a slot is lent again once the consumer moves on.
      for await (const chunk of own.quantizeStream({ scheme, nPerRow, tensor: 'x' }, slotted())) parts.push(chunk.slice());
      const expected = quantizeRows(scheme, widenRows({ dtype: 'F16', bytes }, 'x'), nPerRow);
      expect(Buffer.concat(parts).equals(Buffer.from(expected)), scheme).toBe(true);
    }
    await own.close();
  });
});
