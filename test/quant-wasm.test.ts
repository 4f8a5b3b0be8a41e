import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { generatedFile, renderGenerated, WASM_ENTRIES } from '../scripts/build-wasm.js';
import { dequantizeRows, GGML_TYPE_NAMES, GGML_TYPES, type GgmlTypeName, quantizeRows, setKernelBackend } from '../src/quant/index.js';
import { wasmDequantizer, wasmQuantizer } from '../src/quant/wasm/runtime.js';
import { describeBlockMismatch } from './helpers/quant-golden.js';
import { createRandom, floatFromBits, type Random } from './helpers/quant-random.js';

/**
 * The WebAssembly kernels must give exactly the TypeScript kernels' bytes (which the golden tests pin
 * to ggml) on inputs built to break ports: every magnitude, exact grid points and rounding ties, zeros,
 * subnormals, ±inf and NaN, constant groups, and importance weights over many orders of magnitude.
 */
const SCALE = Number(process.env['POLYQUANT_DIFFERENTIAL_SCALE'] ?? 1);

afterEach(() => setKernelBackend('wasm'));

function hardRows(random: Random, rows: number, n: number): Float32Array {
  const x = new Float32Array(rows * n);
  for (let row = 0; row < rows; row++) {
    const kind = random.integer(0, 7);
    const scale = 10 ** random.integer(-40, 38);
    const step = Math.fround(scale / random.integer(1, 64));
    for (let i = row * n; i < (row + 1) * n; i++) {
      switch (kind) {
        case 0:
          x[i] = random.normal() * scale;
          break;
        case 1:
          // On a grid, with ties at half steps.
          x[i] = Math.fround(step * (random.integer(-40, 40) / 2));
          break;
        case 2:
          x[i] = random.next() < 0.7 ? 0 : random.normal() * scale;
          break;
        case 3: {
          // Any bit pattern — except NaN payloads: which of two NaNs an x86 add or multiply keeps depends
          // on operand order, which V8's JIT chooses freely for the TypeScript kernels (and gcc for ggml),
          // so payload NaNs have no single right answer to compare against. Plain NaN stays in.
          const value = floatFromBits(random.nextUint32());
          x[i] = Number.isNaN(value) ? Number.NaN : value;
          break;
        }
        case 4:
          x[i] = random.next() < 0.02 ? [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY][random.integer(0, 2)]! : random.normal() * scale;
          break;
        case 5:
          x[i] = scale;
          break;
        case 6:
          x[i] = floatFromBits(random.integer(0, 0x7fffff)) * (random.next() < 0.5 ? -1 : 1);
          break;
        default:
          x[i] = (random.next() < 0.05 ? 1000 : 1) * random.normal() * 0.02;
      }
    }
  }
  return x;
}

function hardImportance(random: Random, n: number): Float32Array {
  const w = new Float32Array(n);
  const kind = random.integer(0, 3);
  for (let i = 0; i < n; i++) {
    w[i] = kind === 0 ? 1 : kind === 1 ? random.next() : kind === 2 ? 10 ** random.integer(-30, 30) * random.next() : random.next() < 0.5 ? 0 : random.next();
  }
  return w;
}

const PORTED = GGML_TYPE_NAMES.filter((name) => wasmQuantizer(GGML_TYPES[name]) !== undefined);

describe('WebAssembly kernels', () => {
  it.each(WASM_ENTRIES)('%s is built from the current assembly/ sources', async (entry) => {
    const fresh = (await renderGenerated(entry)) === readFileSync(generatedFile(entry), 'utf8');
    expect(fresh, `src/quant/wasm/${entry}.generated.ts is stale: run npm run wasm`).toBe(true);
  }, 120_000);

  it('cover the speed-critical types', () => {
    expect(PORTED).toEqual(expect.arrayContaining(['Q8_0', 'Q4_0', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K']));
  });

  describe.each(PORTED)('%s', (scheme: GgmlTypeName) => {
    const info = GGML_TYPES[scheme];
    const n = 4 * Math.max(256, info.blockElements);

    for (const weighted of info.importance === 'used' ? [false, true] : [false]) {
      it(`quantizes${weighted ? ' with importance weights' : ''} to the TypeScript kernel's bytes`, () => {
        const random = createRandom(0x5eed ^ info.id ^ (weighted ? 0x100 : 0));
        for (let round = 0; round < 8 * SCALE; round++) {
          const x = hardRows(random, 16, n);
          const importance = weighted ? hardImportance(random, n) : undefined;
          setKernelBackend('js');
          const expected = quantizeRows(scheme, x, n, { importance });
          setKernelBackend('wasm');
          const actual = quantizeRows(scheme, x, n, { importance });
          const message = describeBlockMismatch(`${scheme} (wasm vs js)`, actual, expected, info.blockBytes, n / info.blockElements);
          expect(message, message ?? '').toBeNull();
        }
      });
    }

    it("dequantizes to the TypeScript kernel's floats, bit for bit", () => {
      expect(wasmDequantizer(info)).toBeDefined();
      const random = createRandom(0xdec0 ^ info.id);
      for (let round = 0; round < 4 * SCALE; round++) {
        const bytes = new Uint8Array((16 * n * info.blockBytes) / info.blockElements);
        for (let i = 0; i < bytes.length; i++) bytes[i] = random.integer(0, 255);
        setKernelBackend('js');
        const expected = dequantizeRows(scheme, bytes, n);
        setKernelBackend('wasm');
        const actual = dequantizeRows(scheme, bytes, n);
        // Bit for bit, except that any NaN equals any NaN: when a block's d and m are both NaN, which
        // payload `q·d + m` keeps depends on V8's operand order (see the note on payloads above).
        const expectedBits = new Uint32Array(expected.buffer, expected.byteOffset, expected.length);
        const actualBits = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
        let firstDifference = -1;
        for (let i = 0; i < expected.length && firstDifference < 0; i++) {
          if (expectedBits[i] !== actualBits[i] && !(Number.isNaN(expected[i]) && Number.isNaN(actual[i]))) firstDifference = i;
        }
        expect(firstDifference, `first difference at element ${firstDifference}`).toBe(-1);
      }
    });

    it('handles rows longer than the staging area and offsets into the source', () => {
      const long = info.blockElements * Math.ceil(300_000 / info.blockElements);
      const x = hardRows(createRandom(7), 3, long).subarray(0);
      setKernelBackend('js');
      const expected = quantizeRows(scheme, x, long);
      setKernelBackend('wasm');
      const message = describeBlockMismatch(`${scheme} long rows (wasm vs js)`, quantizeRows(scheme, x, long), expected, info.blockBytes, long / info.blockElements);
      expect(message, message ?? '').toBeNull();
    });
  });
});
