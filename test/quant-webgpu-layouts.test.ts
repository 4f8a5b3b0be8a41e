import { describe, expect, it } from 'vitest';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import {
  createWebGpuTensor,
  dequantizeWebGpu,
  quantizeWebGpu,
  quantizeWebGpuRowsInto,
  WEBGPU_LAYOUT_NAMES,
  WEBGPU_LAYOUTS,
  type WebGpuGroupTensor,
  type WebGpuLayoutName,
  type WebGpuPlainTensor,
  type WebGpuTensor,
  webGpuBytes,
  webGpuLayout,
  webGpuTensorSpecs,
} from '../src/quant/webgpu-layouts.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/tensor/float.js';
import { createRandom, floatFromBits } from './helpers/quant-random.js';

// ------------------------------------------------------------------------------------------ helpers

function words(values: ArrayLike<number>): string[] {
  return Array.from(values, (word) => (word >>> 0).toString(16).padStart(8, '0'));
}

/** The little-endian bytes of uint32 words, as the tensor cache stores them. */
function littleEndianHex(values: Uint32Array): string {
  const view = new DataView(new ArrayBuffer(values.length * 4));
  for (let index = 0; index < values.length; index++) view.setUint32(index * 4, values[index]!, true);
  return Array.from(new Uint8Array(view.buffer), (byte) => byte.toString(16).padStart(2, '0')).join('');
}

function group(tensor: WebGpuTensor): WebGpuGroupTensor {
  if (tensor.kind !== 'group-quant') throw new Error(`${tensor.layout.name} is not a group layout`);
  return tensor;
}

function plain(tensor: WebGpuTensor): WebGpuPlainTensor {
  if (tensor.kind !== 'no-quant') throw new Error(`${tensor.layout.name} is a group layout`);
  return tensor;
}

function row(K: number, values: Record<number, number>): Float32Array {
  const out = new Float32Array(K);
  for (const [index, value] of Object.entries(values)) out[Number(index)] = value;
  return out;
}

/** The stored level of element k of row n: unsigned MLC nibble or signed int8 byte. */
function levelAt(tensor: WebGpuGroupTensor, n: number, k: number): number {
  const { layout, K } = tensor;
  const groups = Math.ceil(K / 32);
  const wordsPerGroup = 32 / layout.elementsPerWord;
  const word = tensor.qWeight[(n * groups + Math.floor(k / 32)) * wordsPerGroup + Math.floor((k % 32) / layout.elementsPerWord)]!;
  const field = (word >>> (layout.bits * (k % layout.elementsPerWord))) & ((1 << layout.bits) - 1);
  return layout.bits === 8 ? (field << 24) >> 24 : field;
}

function scaleAt(tensor: WebGpuGroupTensor, n: number, g: number): number {
  const index = n * Math.ceil(tensor.K / 32) + g;
  return tensor.qScale instanceof Uint16Array ? f16ToF32(tensor.qScale[index]!) : tensor.qScale[index]!;
}

function expectPolyquantError(action: () => unknown, code: string, ...fragments: string[]): void {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(PolyquantError);
    expect((error as PolyquantError).code).toBe(code);
    for (const fragment of fragments) expect((error as PolyquantError).message).toContain(fragment);
    return;
  }
  throw new Error('expected a PolyquantError');
}

// ----------------------------------------------------------------------------------------- the table

describe('WebGPU layout table', () => {
  it("has MLC's q4f16_1, q4f32_1, q0f16, q0f32 and polyquant's own q8f16_pq, q8f32_pq", () => {
    expect(WEBGPU_LAYOUT_NAMES).toEqual(['q4f16_1', 'q4f32_1', 'q0f16', 'q0f32', 'q8f16_pq', 'q8f32_pq']);
    for (const name of WEBGPU_LAYOUT_NAMES) expect(WEBGPU_LAYOUTS[name].name).toBe(name);
  });

  it("pins the MLC int4 rows to GroupQuantize's numbers (group 32, 8 per uint32, max_int 7, levels 0..14)", () => {
    for (const name of ['q4f16_1', 'q4f32_1'] as const) {
      const layout = WEBGPU_LAYOUTS[name];
      // num_elem_per_storage = 32/4, max_int_value = 2^(4−1) − 1, clamp to [0, 2·max_int].
      expect(layout).toMatchObject({ source: 'mlc', groupSize: 32, elementsPerWord: 8, levelOffset: 7, minLevel: 0, maxLevel: 14 });
      expect(layout.weightDType).toBe('uint32');
    }
    expect(WEBGPU_LAYOUTS.q4f16_1.scaleDType).toBe('float16');
    expect(WEBGPU_LAYOUTS.q4f32_1).toMatchObject({ scaleDType: 'float32', scaleFormat: 'f32-to-bf16' });
    expect(WEBGPU_LAYOUTS.q8f16_pq).toMatchObject({ groupSize: 32, elementsPerWord: 4, levelOffset: 0, minLevel: -127, maxLevel: 127 });
    expect(WEBGPU_LAYOUTS.q8f32_pq.scaleFormat).toBe('raw');
  });

  it("names, shapes and sizes polyglot-ko-3.8b's q4f16_1 tensors as specs/webgpu.md §2.4 lists them", () => {
    const layout = webGpuLayout('q4f16_1');
    expect(webGpuTensorSpecs(layout, 'gpt_neox.layers.0.attention.query_key_value.weight', 9216, 3072)).toEqual([
      {
        name: 'gpt_neox.layers.0.attention.query_key_value.q_weight',
        shape: [9216, 384],
        dtype: 'uint32',
        bytes: 14_155_776,
        diskBytes: 14_155_776,
        format: 'raw',
      },
      {
        name: 'gpt_neox.layers.0.attention.query_key_value.q_scale',
        shape: [9216, 96],
        dtype: 'float16',
        bytes: 1_769_472,
        diskBytes: 1_769_472,
        format: 'raw',
      },
    ]);
    const [weight, scale] = webGpuTensorSpecs(layout, 'gpt_neox.layers.0.mlp.dense_4h_to_h.weight', 3072, 12288);
    expect([weight!.shape, weight!.bytes, scale!.shape, scale!.bytes]).toEqual([[3072, 1536], 18_874_368, [3072, 384], 2_359_296]);
    expect(webGpuBytes(layout, 30080, 3072)).toEqual({ bytes: 46_202_880 + 5_775_360, diskBytes: 46_202_880 + 5_775_360 });
  });

  it('sizes the other layouts of the fused QKV weight [9216, 3072], on disk and in memory', () => {
    // q0f16 keeps the HF name and shape (webgpu.md §2.4); f32 records are written f32-to-bf16 (§1.2).
    expect(webGpuTensorSpecs(webGpuLayout('q0f16'), 'qkv.weight', 9216, 3072)).toEqual([
      { name: 'qkv.weight', shape: [9216, 3072], dtype: 'float16', bytes: 56_623_104, diskBytes: 56_623_104, format: 'raw' },
    ]);
    expect(webGpuBytes(webGpuLayout('q0f32'), 9216, 3072)).toEqual({ bytes: 113_246_208, diskBytes: 56_623_104 });
    expect(webGpuBytes(webGpuLayout('q4f32_1'), 9216, 3072)).toEqual({ bytes: 14_155_776 + 3_538_944, diskBytes: 14_155_776 + 1_769_472 });
    const [weight, scale] = webGpuTensorSpecs(webGpuLayout('q8f16_pq'), 'qkv.weight', 9216, 3072);
    expect([weight!.name, weight!.shape, weight!.bytes]).toEqual(['qkv.q_weight', [9216, 768], 28_311_552]);
    expect([scale!.name, scale!.shape, scale!.dtype, scale!.bytes]).toEqual(['qkv.q_scale', [9216, 96], 'float16', 1_769_472]);
    expect(webGpuBytes(webGpuLayout('q8f32_pq'), 9216, 3072)).toEqual({ bytes: 28_311_552 + 3_538_944, diskBytes: 28_311_552 + 3_538_944 });
  });

  it('rounds K up to whole groups of 32', () => {
    const [weight, scale] = webGpuTensorSpecs(webGpuLayout('q4f16_1'), 'w.weight', 2, 40);
    expect([weight!.shape, scale!.shape]).toEqual([[2, 8], [2, 2]]);
  });

  it('rejects unknown layouts, weight names MLC cannot pair, and bad shapes', () => {
    expectPolyquantError(() => webGpuLayout('q4f16_0'), ERROR_CODES.USAGE, 'q4f16_0', 'q4f16_1');
    expectPolyquantError(() => webGpuTensorSpecs(webGpuLayout('q4f16_1'), 'embed_out', 8, 32), ERROR_CODES.USAGE, '.weight');
    expectPolyquantError(
      () => quantizeWebGpu('q4f16_1', new Float32Array(10), 1, 3072),
      ERROR_CODES.USAGE,
      'q4f16_1',
      'row length K = 3072',
      'block size 32',
    );
    expectPolyquantError(() => quantizeWebGpu('q8f16_pq', new Float32Array(0), 0, 32), ERROR_CODES.USAGE, 'positive integers');
  });
});

// -------------------------------------------------------------------------------------- MLC int4

describe('MLC q4f16_1 and q4f32_1', () => {
  it('quantizes a hand-computed group: scale max|w|/7, level round-half-even(w/scale + 7), eight nibbles per word', () => {
    // w_j = −7 + j/2 for j ≤ 28, then zeros: max|w| = 7, scale = 1 (fp16 0x3c00), level = rne(j/2):
    // 0 0 1 2 2 2 3 4 | 4 4 5 6 6 6 7 8 | 8 8 9 10 10 10 11 12 | 12 12 13 14 14 7 7 7.
    const weight = row(32, Object.fromEntries(Array.from({ length: 29 }, (_, j) => [j, -7 + j / 2])));
    for (const name of ['q4f16_1', 'q4f32_1'] as const) {
      const tensor = group(quantizeWebGpu(name, weight, 1, 32));
      expect(words(tensor.qWeight), name).toEqual(['43222100', '87666544', 'cbaaa988', '777eedcc']);
      expect(littleEndianHex(tensor.qWeight), `${name} bytes`).toBe('0021224344656687' + '88a9aacbcced7e77');
      expect(scaleAt(tensor, 0, 0)).toBe(1);
    }
    const half = group(quantizeWebGpu('q4f16_1', weight, 1, 32));
    expect(half.qScale).toBeInstanceOf(Uint16Array);
    expect(half.qScale[0]!.toString(16)).toBe('3c00');
  });

  it('computes w/scale and +7 in float16 for q4f16_1, as the TIR MLC compiles in the model dtype', () => {
    // max|w| = 1: scale = fp16(1/7) = 0.142822265625 (0x3092). For w = 0.21435546875, w/scale = 1.50085…
    // → fp16 1.500977, + 7 = 8.500977 → fp16 8.5 → rne 8. The same steps in float32 give 8.50085 → 9.
    const weight = row(32, { 0: 1, 1: 0.21435546875 });
    const half = group(quantizeWebGpu('q4f16_1', weight, 1, 32));
    expect(half.qScale[0]!.toString(16)).toBe('3092');
    expect([levelAt(half, 0, 0), levelAt(half, 0, 1)]).toEqual([14, 8]);
    const float = group(quantizeWebGpu('q4f32_1', weight, 1, 32));
    expect(scaleAt(float, 0, 0)).toBe(Math.fround(1 / 7));
    expect([levelAt(float, 0, 0), levelAt(float, 0, 1)]).toEqual([14, 9]);
  });

  it('stores scale 0 and the zero level 7 for an all-zero group, where MLC itself would divide 0 by 0', () => {
    const tensor = group(quantizeWebGpu('q4f16_1', new Float32Array(32), 1, 32));
    expect(Array.from(tensor.qScale)).toEqual([0]);
    expect(words(tensor.qWeight)).toEqual(['77777777', '77777777', '77777777', '77777777']);
    expect(Array.from(dequantizeWebGpu(tensor)).every((value) => value === 0)).toBe(true);
  });

  it('packs zeros past K when K is not a multiple of 32 (pack_weight pads with 0)', () => {
    const tensor = group(quantizeWebGpu('q4f16_1', row(40, { 0: 7, 32: -7, 33: 7 }), 1, 40));
    // Group 1 holds 8 weights: −7 → 0, 7 → 14, zeros → 7; positions 40..63 are 0.
    expect(words(tensor.qWeight.subarray(4)), 'group 1').toEqual(['777777e0', '00000000', '00000000', '00000000']);
  });

  it('puts the first element of each word in its lowest bits, so the row bytes read low nibble first', () => {
    const tensor = group(quantizeWebGpu('q4f16_1', row(32, { 0: -7, 1: 7, 8: 7 }), 1, 32));
    expect(tensor.qWeight[0]! & 0xf).toBe(0);
    expect((tensor.qWeight[0]! >>> 4) & 0xf).toBe(14);
    expect(tensor.qWeight[1]! & 0xf).toBe(14);
    expect(littleEndianHex(tensor.qWeight).slice(0, 2)).toBe('e0');
  });

  it('dequantizes as (level − 7)·scale in the model dtype', () => {
    const tensor = group(quantizeWebGpu('q4f16_1', row(32, { 0: 1, 1: 0.21435546875 }), 1, 32));
    const values = dequantizeWebGpu(tensor);
    expect(values[0]).toBe(f16ToF32(f32ToF16(7 * 0.142822265625)));
    expect(values[1]).toBe(0.142822265625);
    expect(values[2]).toBe(0);
  });

  it('rounds q4f32_1 scales to bf16 when asked for the values as stored on disk (f32-to-bf16)', () => {
    const tensor = group(quantizeWebGpu('q4f32_1', row(32, { 0: 1 }), 1, 32));
    const stored = bf16ToF32(f32ToBf16(Math.fround(1 / 7)));
    expect(dequantizeWebGpu(tensor, { asStoredOnDisk: true })[0]).toBe(Math.fround(7 * stored));
    expect(dequantizeWebGpu(tensor)[0]).toBe(Math.fround(7 * Math.fround(1 / 7)));
  });
});

// -------------------------------------------------------------------------------- polyquant int8

describe('polyquant q8f16_pq and q8f32_pq (docs/webgpu-int8-layout.md)', () => {
  it('quantizes a hand-computed group: signed levels, ties to even, four bytes per word, element 0 lowest', () => {
    // max|w| = 127/64 → scale = 1/64 (fp16 0x2400): 1.5 → 2, 2.5 → 2, −2.5 → −2, ∓127.
    const weight = row(32, { 0: 1.5 / 64, 1: 2.5 / 64, 2: -2.5 / 64, 3: -127 / 64, 4: 127 / 64 });
    const tensor = group(quantizeWebGpu('q8f16_pq', weight, 1, 32));
    expect(tensor.qScale[0]!.toString(16)).toBe('2400');
    expect(words(tensor.qWeight)).toEqual(['81fe0202', '0000007f', '00000000', '00000000', '00000000', '00000000', '00000000', '00000000']);
    expect(littleEndianHex(tensor.qWeight).slice(0, 10)).toBe('0202fe817f');
  });

  it('quantizes against the stored fp16 scale, so fp16 rounding of the scale can move a level', () => {
    // max|w| = 1: scale32 = float32(1/127) = 0.0078740157; fp16 rounds it to 0.00787353515625 (0x2008).
    // 0.99605/scale16 = 126.506 → 127, while 0.99605/scale32 = 126.498 → 126.
    const weight = row(32, { 0: 1, 1: 0.99605, 2: -0.99605, 3: 0.5, 4: -1 });
    const half = group(quantizeWebGpu('q8f16_pq', weight, 1, 32));
    expect(half.qScale[0]!.toString(16)).toBe('2008');
    expect(words(half.qWeight.subarray(0, 2))).toEqual(['40817f7f', '00000081']);
    const float = group(quantizeWebGpu('q8f32_pq', weight, 1, 32));
    expect(Array.from(float.qScale)).toEqual([Math.fround(1 / 127)]);
    expect(words(float.qWeight.subarray(0, 2))).toEqual(['40827e7f', '00000081']);
  });

  it('writes level 0 with scale 0 for an all-zero group, and zeros past K', () => {
    const tensor = group(quantizeWebGpu('q8f16_pq', row(36, { 33: -1 }), 1, 36));
    expect(Array.from(tensor.qScale)).toEqual([0, f32ToF16(Math.fround(1 / 127))]);
    expect(words(tensor.qWeight.subarray(0, 8)).every((word) => word === '00000000')).toBe(true);
    expect(words(tensor.qWeight.subarray(8))).toEqual(['00008100', '00000000', '00000000', '00000000', '00000000', '00000000', '00000000', '00000000']);
  });

  it('dequantizes as f32(level)·scale', () => {
    const tensor = group(quantizeWebGpu('q8f32_pq', row(32, { 0: 1, 1: -0.5 }), 1, 32));
    const values = dequantizeWebGpu(tensor);
    expect(values[0]).toBe(Math.fround(127 * Math.fround(1 / 127)));
    expect(values[1]).toBe(Math.fround(-64 * Math.fround(1 / 127)));
  });
});

// ----------------------------------------------------------------------------------------- no-quant

describe('MLC q0f16 and q0f32', () => {
  it('rounds q0f16 weights to nearest even fp16 and keeps the [N, K] layout', () => {
    const weight = Float32Array.from([1 + 2 ** -11, 1 + 3 * 2 ** -11, -2, 65520]);
    const tensor = plain(quantizeWebGpu('q0f16', weight, 2, 2));
    expect(Array.from(tensor.weight, (bits) => bits.toString(16))).toEqual(['3c00', '3c02', 'c000', '7c00']);
    expect(Array.from(dequantizeWebGpu(tensor))).toEqual([1, 1 + 2 ** -9, -2, Number.POSITIVE_INFINITY]);
  });

  it('copies q0f32 weights exactly, and reads them back as bf16 when asked for the disk values', () => {
    const weight = Float32Array.from([0.1, -3.25]);
    const tensor = plain(quantizeWebGpu('q0f32', weight, 1, 2));
    expect(Array.from(tensor.weight)).toEqual(Array.from(weight));
    expect(Array.from(dequantizeWebGpu(tensor, { asStoredOnDisk: true }))).toEqual([bf16ToF32(f32ToBf16(0.1)), -3.25]);
  });
});

// ------------------------------------------------------------------------------- round trips, chunks

describe('WebGPU round trips', () => {
  const bounds: Record<Exclude<WebGpuLayoutName, 'q0f16' | 'q0f32'>, (scale: number, weight: number) => number> = {
    // f16 steps: w/scale (≤ 7·2^-11 of a level) and +7 (half an fp16 ulp at 8..16 = 2^-8 of a level),
    // the product's rounding (≤ 7·2^-11·scale) and the weight's own fp16 rounding (2^-11·|w|).
    q4f16_1: (scale, weight) => scale * (0.5 + 0.012) + 2 ** -11 * Math.abs(weight),
    q4f32_1: (scale) => scale * (0.5 + 1e-5),
    // Clamping at ±127 costs at most 127·2^-11 of a level, under half a step.
    q8f16_pq: (scale) => scale * (0.5 + 1e-5),
    q8f32_pq: (scale) => scale * (0.5 + 1e-5),
  };
  for (const [name, bound] of Object.entries(bounds)) {
    it(`dequantizes ${name} to within half a step of every weight`, () => {
      const random = createRandom(31337);
      const N = 4;
      const K = 100; // a short last group
      const weight = Float32Array.from({ length: N * K }, (_, index) => random.normal() * (index % 29 === 3 ? 1 : 0.03));
      const tensor = group(quantizeWebGpu(name, weight, N, K));
      const values = dequantizeWebGpu(tensor);
      for (let n = 0; n < N; n++) {
        for (let k = 0; k < K; k++) {
          const scale = scaleAt(tensor, n, Math.floor(k / 32));
          const limit = bound(scale, weight[n * K + k]!);
          const error = Math.abs(values[n * K + k]! - weight[n * K + k]!);
          if (error > limit) throw new Error(`${name} (${n}, ${k}): |${values[n * K + k]} − ${weight[n * K + k]}| = ${error} > ${limit}`);
        }
      }
    });
  }

  for (const name of WEBGPU_LAYOUT_NAMES) {
    it(`writes the same ${name} tensors when the weight is streamed in row chunks`, () => {
      const random = createRandom(5);
      const weight = Float32Array.from({ length: 5 * 70 }, () => random.normal());
      const whole = quantizeWebGpu(name, weight, 5, 70);
      const chunked = createWebGpuTensor(name, 5, 70);
      quantizeWebGpuRowsInto(chunked, weight.subarray(0, 70), 0);
      quantizeWebGpuRowsInto(chunked, weight.subarray(70), 1);
      expect(chunked).toEqual(whole);
      expectPolyquantError(() => quantizeWebGpuRowsInto(chunked, weight.subarray(0, 71), 0), ERROR_CODES.USAGE, 'not whole rows');
      expectPolyquantError(() => quantizeWebGpuRowsInto(chunked, weight.subarray(0, 140), 4), ERROR_CODES.USAGE, 'outside');
    });
  }
});

describe('WebGPU layouts on hostile floats', () => {
  it('never throw and always write levels inside each layout range for NaN, ±inf, subnormals and huge values', () => {
    const random = createRandom(808);
    const weight = Float32Array.from({ length: 3 * 64 }, () => floatFromBits(random.nextUint32()));
    weight[0] = Number.NaN;
    weight[1] = Number.POSITIVE_INFINITY;
    weight[2] = Number.NEGATIVE_INFINITY;
    weight[3] = 1e-45;
    for (const name of WEBGPU_LAYOUT_NAMES) {
      const tensor = quantizeWebGpu(name, weight, 3, 64);
      expect(dequantizeWebGpu(tensor)).toHaveLength(3 * 64);
      if (tensor.kind !== 'group-quant') continue;
      const { minLevel, maxLevel } = tensor.layout;
      const outside: number[] = [];
      for (let n = 0; n < 3; n++) {
        for (let k = 0; k < 64; k++) {
          const level = levelAt(tensor, n, k);
          if (level < minLevel || level > maxLevel) outside.push(level);
        }
      }
      expect(outside, name).toEqual([]);
    }
  });
});
