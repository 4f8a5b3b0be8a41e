import { afterEach, describe, expect, it } from 'vitest';
import { setKernelBackend } from '../src/quant/index.js';
import { wasmWebGpuQuantizer } from '../src/quant/wasm/runtime.js';
import {
  createWebGpuTensor,
  quantizeWebGpu,
  quantizeWebGpuChunk,
  quantizeWebGpuRowsInto,
  TENSOR_CACHE_STORAGES,
  WEBGPU_LAYOUT_NAMES,
  WEBGPU_LAYOUTS,
  type WebGpuLayout,
  type WebGpuTensor,
  webGpuChunkLayoutId,
  webGpuChunkParts,
} from '../src/quant/webgpu-layouts.js';
import { f16ToF32 } from '../src/tensor/float.js';
import { bitsFromFloat, createRandom, floatFromBits, type Random } from './helpers/quant-random.js';

/**
 * The WebAssembly WebGPU group quantizer (assembly/webgpu.ts) must give exactly the TypeScript kernels'
 * bytes (webgpu-layouts.ts `quantizeRowMlcInt4` / `quantizeRowPolyquantInt8`, which the layout tests pin
 * to MLC's rules) for every layout and float32 storage, on groups built to break a port: ±max ties, levels
 * landing exactly on .5 in float32 and in fp16 arithmetic and their neighbours, all-zero groups, zeros of
 * both signs, subnormals (float32 and fp16), ±inf, NaN, huge values and the fp16 overflow edge — and K
 * that is not a multiple of 32 (a short last group).
 */
const SCALE = Number(process.env['POLYQUANT_DIFFERENTIAL_SCALE'] ?? 1);
const FLT_MAX = 3.4028234663852886e38;
const GROUP_LAYOUTS = WEBGPU_LAYOUT_NAMES.map((name) => WEBGPU_LAYOUTS[name]).filter((layout) => layout.kind === 'group-quant');

afterEach(() => setKernelBackend('wasm'));

/** `steps` float32 ulps away from `value` (towards +inf for steps > 0; from zero, into the subnormals). */
function nudge(value: number, steps: number): number {
  if (value === 0) return steps === 0 ? value : floatFromBits(Math.abs(steps)) * Math.sign(steps);
  const bits = bitsFromFloat(value);
  return floatFromBits(bits + (value > 0 ? steps : -steps));
}

/** `steps` fp16 ulps away from `value`, a positive fp16 value below 65504 (what survives the f16 rounding of q4f16_1). */
function nudgeHalf(value: number, steps: number): number {
  const ulp = 2 ** (Math.max(Math.floor(Math.log2(value)), -14) - 10);
  return Math.fround(value + steps * ulp);
}

/** A float at or next to an fp16 rounding boundary: a half, a midpoint between two halves, or the overflow edge. */
function halfBoundary(random: Random): number {
  const half = random.integer(0, 0x7bff);
  const low = f16ToF32(half);
  const high = f16ToF32(half + 1);
  const sign = random.next() < 0.5 ? -1 : 1;
  switch (random.integer(0, 3)) {
    case 0:
      return sign * nudge(low, random.integer(-1, 1));
    case 1:
      // The exact midpoint (a tie to even in f32 → f16) and its neighbours.
      return sign * nudge(Math.fround((low + high) / 2), random.integer(-1, 1));
    case 2:
      // Around 65520, where values start rounding to inf.
      return sign * nudge(65520, random.integer(-2, 2));
    default:
      // fp16 subnormals and the 2^-25 tie to zero.
      return sign * nudge(2 ** -25 * random.integer(1, 4), random.integer(-1, 1));
  }
}

/** Fills one group of `x` (from `start`, `count` floats) with one adversarial pattern. */
function fillGroup(random: Random, x: Float32Array, start: number, count: number, layout: WebGpuLayout): void {
  const kind = random.integer(0, 17);
  const scale = 10 ** random.integer(-40, 38);
  // The scale is max |w| / maxInt: an extreme of maxInt·step makes it `step` exactly (a power of two,
  // inside fp16's normal range so that q4f16_1 and q8f16_pq store it exactly too), so w / scale is exact
  // and (m + 0.5)·step is a real tie.
  const maxInt = layout.bits === 4 ? 7 : 127;
  const step = 2 ** random.integer(-14, 9);
  const sign = random.next() < 0.5 ? -1 : 1;
  for (let j = 0; j < count; j++) {
    const i = start + j;
    switch (kind) {
      case 0:
        x[i] = random.normal() * scale;
        break;
      case 1:
        // Ties on the grid, both extremes possible.
        x[i] = j === 0 ? sign * maxInt * step : (step * random.integer(-2 * maxInt, 2 * maxInt)) / 2;
        break;
      case 2:
        // Exactly ±a at both ends, smaller values between.
        x[i] = j === 0 ? scale : j === count - 1 ? -scale : random.normal() * scale * 0.3;
        break;
      case 3:
        // Zeros of both signs (an all-zero group is the guard's case), NaN now and then, rarely a value.
        x[i] = random.next() < 0.5 ? -0 : random.next() < 0.1 ? Number.NaN : random.next() < 0.03 ? random.normal() : 0;
        break;
      case 4: {
        const value = floatFromBits(random.nextUint32());
        x[i] = Number.isNaN(value) ? Number.NaN : value;
        break;
      }
      case 5:
        x[i] = random.next() < 0.1 ? [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY][random.integer(0, 2)]! : random.normal() * scale;
        break;
      case 6:
        // float32 subnormals (the f16 model rounds them to ±0: an all-zero group there).
        x[i] = floatFromBits(random.integer(0, 0x7fffff)) * (random.next() < 0.5 ? -1 : 1);
        break;
      case 7:
        x[i] = (random.next() < 0.5 ? -1 : 1) * nudge(FLT_MAX, -random.integer(0, 1000));
        break;
      case 8:
        x[i] = scale;
        break;
      case 9:
        // A float32 ulp or two either side of a tie.
        x[i] = j === 0 ? sign * maxInt * step : nudge(Math.fround((random.integer(-maxInt, maxInt - 1) + 0.5) * step), random.integer(-2, 2));
        break;
      case 10:
        x[i] = Number.NaN;
        break;
      case 11:
        // One value alone (the rest zero): the scale shows how that value rounded.
        x[i] = j === count >> 1 ? halfBoundary(random) : 0;
        break;
      case 12:
        x[i] = halfBoundary(random);
        break;
      case 13: {
        // fp16 ulps either side of a tie: in q4f16_1's fp16 arithmetic w / scale then rounds onto or next
        // to m + 0.5, and fl16(q + 7) onto a tie where float32 would not.
        const tie = (random.integer(0, 2 * maxInt - 1) + 0.5) * step;
        x[i] = j === 0 ? sign * maxInt * step : (random.next() < 0.5 ? -1 : 1) * nudgeHalf(tie, random.integer(-3, 3));
        break;
      }
      case 14:
        // Off-grid extremes: a scale that is not a power of two, quotients that round in fp16.
        x[i] = j === 0 ? sign * Math.fround(maxInt * step * (1 + random.next())) : Math.fround(step * random.integer(-4 * maxInt, 4 * maxInt) * 0.37);
        break;
      case 15:
        // fp16 subnormal magnitudes (k·2^-24): max |w| / 7 rounds coarsely, to zero or far from it, so
        // the quotients reach past the clamp.
        x[i] = (random.next() < 0.5 ? -1 : 1) * 2 ** -24 * random.integer(0, 40);
        break;
      case 16:
        // The fp16 overflow edge in a group of ordinary values: max |w| may round to inf (scale inf).
        x[i] = j === 0 ? sign * nudge(65520, random.integer(-2, 2)) : random.normal() * 1000;
        break;
      default:
        x[i] = (random.next() < 0.05 ? 1000 : 1) * random.normal() * 0.02;
    }
  }
}

/** Rows of K floats, one adversarial pattern per run of `patternLength` (default: the group of 32). */
function adversarialRows(random: Random, rows: number, K: number, layout: WebGpuLayout, patternLength = 32): Float32Array {
  const x = new Float32Array(rows * K);
  for (let row = 0; row < rows; row++) {
    for (let start = 0; start < K; start += patternLength) fillGroup(random, x, row * K + start, Math.min(patternLength, K - start), layout);
  }
  return x;
}

const hex = (bytes: Uint8Array): string => Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');

/** The first differing byte of a chunk: its part, group and both groups' bytes in hex; or null. */
function describeChunkMismatch(id: string, rows: number, K: number, actual: Uint8Array, expected: Uint8Array): string | null {
  if (actual.length !== expected.length) return `${id}: ${actual.length} bytes, expected ${expected.length}`;
  const index = actual.findIndex((byte, i) => byte !== expected[i]);
  if (index < 0) return null;
  const [weightBytes = 0, scaleBytes = 0] = webGpuChunkParts(id, rows, K);
  const groups = Math.ceil(K / 32) * rows;
  const inWeight = index < weightBytes;
  const unit = inWeight ? weightBytes / groups : scaleBytes / groups;
  const offset = inWeight ? index : index - weightBytes;
  const start = index - (offset % unit);
  const group = Math.floor(offset / unit);
  return `${id} (wasm vs js), K = ${K}: first difference in ${inWeight ? 'q_weight' : 'q_scale'}, row ${Math.floor(group / Math.ceil(K / 32))} group ${group % Math.ceil(K / 32)}: wasm ${hex(actual.subarray(start, start + unit))}, js ${hex(expected.subarray(start, start + unit))}`;
}

function chunkBoth(id: string, x: Float32Array, K: number): { actual: Uint8Array; expected: Uint8Array } {
  setKernelBackend('js');
  const expected = quantizeWebGpuChunk(id, x, K);
  setKernelBackend('wasm');
  return { actual: quantizeWebGpuChunk(id, x, K), expected };
}

function tensorBytes(tensor: WebGpuTensor): Uint8Array[] {
  const bytes = (array: ArrayBufferView): Uint8Array => new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  return tensor.kind === 'group-quant' ? [bytes(tensor.qWeight), bytes(tensor.qScale)] : [bytes(tensor.weight)];
}

describe('WebAssembly WebGPU group quantizer', () => {
  it('is used under the wasm backend and not under the js one', () => {
    expect(wasmWebGpuQuantizer()).toBeDefined();
    setKernelBackend('js');
    expect(wasmWebGpuQuantizer()).toBeUndefined();
  });

  const cases = GROUP_LAYOUTS.flatMap((layout) => TENSOR_CACHE_STORAGES.map((storage) => [webGpuChunkLayoutId(layout.name, storage), layout] as const));
  describe.each(cases)('%s', (id, layout) => {
    it("quantizes adversarial rows to the TypeScript kernel's bytes", () => {
      const random = createRandom(0x3e6 ^ (layout.bits << 8) ^ (layout.modelDType === 'float16' ? 0x1000 : 0) ^ (id.endsWith('bf16') ? 0x2000 : 0));
      for (let round = 0; round < 8 * SCALE; round++) {
        // Whole groups, and K with a short last group.
        const K = 32 * random.integer(0, 6) + (round % 2 === 0 ? 0 : random.integer(1, 31)) || 32;
        const rows = random.integer(1, 12);
        const x = adversarialRows(random, rows, K, layout);
        const before = x.slice();
        const { actual, expected } = chunkBoth(id, x, K);
        const message = describeChunkMismatch(id, rows, K, actual, expected);
        expect(message, message ?? '').toBeNull();
        expect(Buffer.from(x.buffer).equals(Buffer.from(before.buffer))).toBe(true);
      }
    });
  });

  it.each(GROUP_LAYOUTS.map((layout) => [layout.name, layout] as const))('%s: quantizes every short last group length (K mod 32 = 1…31) alike', (name, layout) => {
    const random = createRandom(0x5407 ^ layout.bits);
    for (let tail = 1; tail < 32; tail++) {
      const K = 32 * (tail % 3) + tail;
      const id = webGpuChunkLayoutId(name, 'bf16');
      const x = adversarialRows(random, 3, K, layout);
      const { actual, expected } = chunkBoth(id, x, K);
      const message = describeChunkMismatch(id, 3, K, actual, expected);
      expect(message, message ?? '').toBeNull();
    }
  });

  it.each(GROUP_LAYOUTS.map((layout) => [layout.name, layout] as const))(
    '%s: writes the same tensor through quantizeWebGpu and row chunks at an offset',
    (name, layout) => {
      for (const K of [32 * 5, 77]) {
        const random = createRandom(0xc4a1 ^ K ^ layout.bits);
        const N = 7;
        const x = adversarialRows(random, N, K, layout);
        setKernelBackend('js');
        const expected = tensorBytes(quantizeWebGpu(name, x, N, K));
        setKernelBackend('wasm');
        const whole = tensorBytes(quantizeWebGpu(name, x, N, K));
        const streamed = createWebGpuTensor(name, N, K);
        quantizeWebGpuRowsInto(streamed, x.subarray(0, 3 * K), 0);
        quantizeWebGpuRowsInto(streamed, x.subarray(3 * K), 3);
        for (const [part, bytes] of tensorBytes(streamed).entries()) {
          expect(Buffer.from(whole[part]!).equals(Buffer.from(expected[part]!)), `${name} K = ${K} whole, part ${part}`).toBe(true);
          expect(Buffer.from(bytes).equals(Buffer.from(expected[part]!)), `${name} K = ${K} streamed, part ${part}`).toBe(true);
        }
      }
    },
  );

  it('stages chunks of many rows and rows longer than the staging area', () => {
    // 200 rows of 3072 span three staging chunks; 3 rows of 270336 need one chunk each; 90 rows of
    // 3007 (a short last group) span two.
    for (const [rows, K] of [
      [200, 3072],
      [3, 128 * 2112],
      [90, 3007],
    ] as const) {
      for (const id of [webGpuChunkLayoutId('q4f16_1', 'raw'), webGpuChunkLayoutId('q4f32_1', 'bf16'), webGpuChunkLayoutId('q8f16_pq', 'raw')]) {
        const x = adversarialRows(createRandom(K), rows, K, WEBGPU_LAYOUTS.q4f16_1);
        const { actual, expected } = chunkBoth(id, x, K);
        const message = describeChunkMismatch(id, rows, K, actual, expected);
        expect(message, message ?? '').toBeNull();
      }
    }
  });

  it('writes the no-quant layouts with the same bytes under both backends (q0f16 through ggml F16\'s kernel)', () => {
    for (const name of ['q0f16', 'q0f32'] as const) {
      for (const storage of TENSOR_CACHE_STORAGES) {
        const id = webGpuChunkLayoutId(name, storage);
        const x = adversarialRows(createRandom(5), 4, 96, WEBGPU_LAYOUTS[name]);
        const { actual, expected } = chunkBoth(id, x, 96);
        expect(Buffer.from(actual).equals(Buffer.from(expected)), id).toBe(true);
      }
    }
  });
});
