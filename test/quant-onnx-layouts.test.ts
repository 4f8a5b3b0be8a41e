import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { type KernelBackend, setKernelBackend } from '../src/quant/index.js';
import { quantizeRowQ4_0 } from '../src/quant/legacy.js';
import {
  createMatMulNBitsTensor,
  dequantizeMatMulInteger,
  dequantizeMatMulNBits,
  MATMULINTEGER_LAYOUTS,
  MATMULNBITS_BIT_WIDTHS,
  MATMULNBITS_BLOCK_SIZES,
  MATMULNBITS_LAYOUTS,
  type MatMulNBitsTensor,
  matMulIntegerBytes,
  matMulIntegerLayout,
  matMulIntegerShapes,
  matMulNBitsBytes,
  matMulNBitsLayout,
  matMulNBitsScale,
  matMulNBitsShapes,
  matMulNBitsZeroPoint,
  quantizeMatMulInteger,
  quantizeMatMulNBits,
  quantizeMatMulNBitsRowsInto,
} from '../src/quant/onnx-layouts.js';
import { f16ToF32, f32ToF16 } from '../src/tensor/float.js';
import { bitsFromFloat, createRandom, floatFromBits } from './helpers/quant-random.js';

// ------------------------------------------------------------------------------------------ helpers

/**
 * The MatMulNBits kernel tests run on both kernels: the WebAssembly port (assembly/onnx.ts, used when K is
 * a multiple of the block) and the TypeScript reference.
 */
const KERNEL_BACKENDS: readonly KernelBackend[] = ['wasm', 'js'];

function useBackend(backend: KernelBackend): void {
  beforeEach(() => setKernelBackend(backend));
  afterEach(() => setKernelBackend('wasm'));
}

function hex(bytes: ArrayLike<number>): string {
  return Array.from(bytes, (byte) => (byte & 0xff).toString(16).padStart(2, '0')).join('');
}

/** A row of K floats, zeros except the given positions. */
function row(K: number, values: Record<number, number>): Float32Array {
  const out = new Float32Array(K);
  for (const [index, value] of Object.entries(values)) out[Number(index)] = value;
  return out;
}

/** The level of element k of row n (4-bit nibble or 8-bit byte). */
function levelAt(tensor: MatMulNBitsTensor, n: number, k: number): number {
  const block = Math.floor(k / tensor.blockSize);
  const j = k % tensor.blockSize;
  const base = (n * tensor.kBlocks + block) * tensor.layout.blobBytes;
  return tensor.bits === 8 ? tensor.B[base + j]! : (tensor.B[base + (j >> 1)]! >> ((j & 1) * 4)) & 0x0f;
}

/** The B bytes of one block, as hex. */
function blockHex(tensor: MatMulNBitsTensor, n: number, block: number): string {
  const start = (n * tensor.kBlocks + block) * tensor.layout.blobBytes;
  return hex(tensor.B.subarray(start, start + tensor.layout.blobBytes));
}

function expectPolyquantError(action: () => unknown, code: string, ...fragments: string[]): void {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(PolyquantError);
    const polyquantError = error as PolyquantError;
    expect(polyquantError.code).toBe(code);
    for (const fragment of fragments) expect(polyquantError.message).toContain(fragment);
    return;
  }
  throw new Error('expected a PolyquantError');
}

// ---------------------------------------------------------------------------------------- the tables

describe('MatMulNBits layout table', () => {
  it('derives one layout per bits × block size × symmetry × scale type, each under its own id', () => {
    expect(MATMULNBITS_LAYOUTS).toHaveLength(2 * 4 * 2 * 2);
    expect(new Set(MATMULNBITS_LAYOUTS.map((layout) => layout.id)).size).toBe(MATMULNBITS_LAYOUTS.length);
    expect(MATMULNBITS_BLOCK_SIZES).toEqual([16, 32, 64, 128]);
    const layout = matMulNBitsLayout({ bits: 4, blockSize: 32, symmetric: true, scaleType: 'f32' });
    expect(layout.id).toBe('onnx-q4-b32-sym-f32');
    expect(matMulNBitsLayout('onnx-q8-b128-asym-f16')).toMatchObject({ bits: 8, blockSize: 128, symmetric: false, scaleType: 'f16' });
  });

  it('pins blob bytes to block_size·bits/8, zero points to 2^(bits−1) and scales to their dtype (ContribOperators.md)', () => {
    expect(MATMULNBITS_BIT_WIDTHS[4]).toEqual({ bits: 4, valuesPerByte: 2, maxLevel: 15, defaultZeroPoint: 8 });
    expect(MATMULNBITS_BIT_WIDTHS[8]).toEqual({ bits: 8, valuesPerByte: 1, maxLevel: 255, defaultZeroPoint: 128 });
    for (const layout of MATMULNBITS_LAYOUTS) {
      expect(layout.blobBytes, layout.id).toBe((layout.blockSize * layout.bits) / 8);
      expect(layout.scaleBytes, layout.id).toBe(layout.scaleType === 'f16' ? 2 : 4);
      expect(layout.zeroPointBits, layout.id).toBe(layout.symmetric ? 0 : layout.bits);
    }
  });

  it("sizes polyglot-ko-3.8b's fused QKV weight [9216, 3072] the way ORT's quantizer allocates it", () => {
    // qbits_block_quant: packed (cols, k_blocks, blob_size), scales (cols·k_blocks), zero_point cols·ceil(k_blocks/kpack).
    expect(matMulNBitsBytes(matMulNBitsLayout('onnx-q4-b32-sym-f32'), 9216, 3072)).toEqual({
      B: 14_155_776,
      scales: 3_538_944,
      zeroPoints: 0,
      total: 17_694_720,
    });
    expect(matMulNBitsBytes(matMulNBitsLayout('onnx-q4-b32-asym-f16'), 9216, 3072)).toEqual({
      B: 14_155_776,
      scales: 1_769_472,
      zeroPoints: 442_368,
      total: 16_367_616,
    });
    expect(matMulNBitsBytes(matMulNBitsLayout('onnx-q8-b128-asym-f32'), 9216, 3072)).toEqual({
      B: 28_311_552,
      scales: 884_736,
      zeroPoints: 221_184,
      total: 29_417_472,
    });
    // Same nibbles per weight as MLC's q4f16_1 q_weight of dense_4h_to_h [3072, 12288] (webgpu.md §2.4: 18,874,368).
    expect(matMulNBitsBytes(matMulNBitsLayout('onnx-q4-b32-sym-f16'), 3072, 12288).B).toBe(18_874_368);
    expect(matMulNBitsShapes(matMulNBitsLayout('onnx-q4-b32-sym-f32'), 9216, 3072)).toEqual({
      kBlocks: 96,
      B: [9216, 96, 16],
      scales: [884_736],
      zeroPoints: null,
      zeroPointBytesPerRow: 0,
    });
  });

  it('rounds K up to whole blocks and 4-bit zero points up to whole bytes', () => {
    expect(matMulNBitsShapes(matMulNBitsLayout('onnx-q4-b32-asym-f32'), 2, 40)).toEqual({
      kBlocks: 2,
      B: [2, 2, 16],
      scales: [4],
      zeroPoints: [2],
      zeroPointBytesPerRow: 1,
    });
    expect(matMulNBitsShapes(matMulNBitsLayout('onnx-q4-b16-asym-f32'), 1, 35).zeroPointBytesPerRow).toBe(2);
    expect(matMulNBitsShapes(matMulNBitsLayout('onnx-q8-b16-asym-f32'), 1, 35).zeroPointBytesPerRow).toBe(3);
  });

  it('rejects an unsupported block size, naming the layout, the row length and the block size', () => {
    expectPolyquantError(
      () => quantizeMatMulNBits(new Float32Array(48), 1, 48, { bits: 4, blockSize: 24 as 32, symmetric: true, scaleType: 'f32' }),
      ERROR_CODES.USAGE,
      'onnx-q4-b24-sym-f32',
      'row length K = 48',
      'block size 24',
    );
  });

  it('rejects a weight that is not N·K floats, naming the layout, the row length and the block size', () => {
    expectPolyquantError(
      () => quantizeMatMulNBits(new Float32Array(100), 1, 3072, 'onnx-q4-b32-sym-f32'),
      ERROR_CODES.USAGE,
      'onnx-q4-b32-sym-f32',
      'K = 3072',
      'block size 32',
      '100 floats',
    );
    expectPolyquantError(() => quantizeMatMulNBits(new Float32Array(0), 0, 0, 'onnx-q4-b32-sym-f32'), ERROR_CODES.USAGE, 'positive integers');
  });

  it('rejects row chunks that are not whole rows or fall outside the tensor', () => {
    const tensor = createMatMulNBitsTensor('onnx-q4-b32-sym-f32', 2, 32);
    expectPolyquantError(() => quantizeMatMulNBitsRowsInto(tensor, new Float32Array(33), 0), ERROR_CODES.USAGE, 'not whole rows of 32');
    expectPolyquantError(() => quantizeMatMulNBitsRowsInto(tensor, new Float32Array(64), 1), ERROR_CODES.USAGE, 'outside');
  });
});

describe('MatMulInteger layout table', () => {
  it('has int8-symmetric and uint8-asymmetric weights, per channel and per tensor', () => {
    expect(MATMULINTEGER_LAYOUTS.map((layout) => layout.id)).toEqual([
      'onnx-matmulinteger-int8-per-channel',
      'onnx-matmulinteger-int8-per-tensor',
      'onnx-matmulinteger-uint8-per-channel',
      'onnx-matmulinteger-uint8-per-tensor',
    ]);
    // quant_utils ONNX_INT_TYPE_SYMMETRIC_RANGE / ONNX_INT_TYPE_RANGE; TensorProto INT8 = 3, UINT8 = 2.
    expect(matMulIntegerLayout('onnx-matmulinteger-int8-per-channel')).toMatchObject({
      symmetric: true,
      rangeMin: -127,
      rangeMax: 127,
      clipMin: -128,
      clipMax: 127,
      onnxDataType: 3,
    });
    expect(matMulIntegerLayout({ weightType: 'uint8', granularity: 'per-tensor' })).toMatchObject({
      symmetric: false,
      rangeMin: 0,
      rangeMax: 255,
      onnxDataType: 2,
    });
    expectPolyquantError(() => matMulIntegerLayout('onnx-matmulinteger-int4-per-channel'), ERROR_CODES.USAGE, 'int4', 'one of');
  });

  it("sizes the fused QKV weight [9216, 3072] as B [K, N] plus one scale and zero point per output", () => {
    const layout = matMulIntegerLayout('onnx-matmulinteger-int8-per-channel');
    expect(matMulIntegerShapes(layout, 9216, 3072)).toEqual({ B: [3072, 9216], scale: [9216], zeroPoint: [9216] });
    expect(matMulIntegerBytes(layout, 9216, 3072)).toEqual({ B: 28_311_552, scales: 36_864, zeroPoints: 9216, total: 28_357_632 });
    expect(matMulIntegerShapes(matMulIntegerLayout('onnx-matmulinteger-int8-per-tensor'), 9216, 3072).scale).toEqual([]);
  });
});

// ------------------------------------------------------------------------------ hand-computed 4-bit

describe.each(KERNEL_BACKENDS)('with the %s kernels', (backend) => {
  useBackend(backend);

  describe('MatMulNBits 4-bit symmetric (MLAS range2scale)', () => {
    it('quantizes a hand-computed row: scale −(negative extreme)/8, roundf ties away from zero, levels clamped to 15', () => {
      // x_j = (j − 16)/4: the extreme is −4 (j = 0), so scale = 4/8 = 0.5 and level = roundf(2·x + 8) = roundf(j/2):
      // odd j are ties that go up (round-half-even would give 0, 2, 2, 4 …); j = 31 gives 16 → 15.
      const weight = Float32Array.from({ length: 32 }, (_, j) => (j - 16) / 4);
      const tensor = quantizeMatMulNBits(weight, 1, 32, 'onnx-q4-b32-sym-f32');
      expect(hex(tensor.B), 'B').toBe('102132435465768798a9bacbdcedfeff');
      expect(Array.from(tensor.scales)).toEqual([0.5]);
      expect(tensor.zeroPoints).toBeUndefined();
    });

    it('gives a negative scale when the largest magnitude is positive (the extreme always lands on level 0)', () => {
      const tensor = quantizeMatMulNBits(row(16, { 0: 2, 1: -1, 2: 0.5 }), 1, 16, 'onnx-q4-b16-sym-f32');
      // scale = −2/8 = −0.25, 1/scale = −4: 2 → 0, −1 → 12, 0.5 → 6, 0 → 8.
      expect(Array.from(tensor.scales)).toEqual([-0.25]);
      expect(hex(tensor.B), 'B').toBe('c086888888888888');
      expect(Array.from(dequantizeMatMulNBits(tensor).subarray(0, 3))).toEqual([2, -1, 0.5]);
    });

    it('picks the negative end when +a and −a tie for the largest magnitude', () => {
      const tensor = quantizeMatMulNBits(row(16, { 0: 1, 1: -1 }), 1, 16, 'onnx-q4-b16-sym-f32');
      // fabsf(max) > fabsf(min) is false on a tie, so max = min = −1 and scale = +1/8: 1 → 16 → 15, −1 → 0.
      expect(Array.from(tensor.scales)).toEqual([0.125]);
      expect(hex(tensor.B), 'B').toBe('0f88888888888888');
    });

    it('stores −0 for an all-zero block and writes the zero level, with no NaN anywhere', () => {
      const tensor = quantizeMatMulNBits(new Float32Array(64), 1, 64, 'onnx-q4-b32-sym-f32');
      expect(Array.from(tensor.scales as Float32Array, (scale) => bitsFromFloat(scale).toString(16))).toEqual(['80000000', '80000000']);
      expect(hex(tensor.B), 'B').toBe('88'.repeat(32));
      const values = dequantizeMatMulNBits(tensor);
      expect(values.every((value) => value === 0)).toBe(true);
    });

    it('quantizes against the rounded fp16 scale, after rounding the weights to fp16', () => {
      // −0.3 becomes fp16 −0.300048828125, so scale = 0.0375061035… exactly (bits 0x28cd). With it,
      // 0.09375 · (1/scale) + 8 = 10.4996 → 10; the unrounded scale 0.0375 would have given 10.5 → 11.
      const tensor = quantizeMatMulNBits(row(16, { 0: -0.3, 1: 0.09375 }), 1, 16, 'onnx-q4-b16-sym-f16');
      expect(tensor.scales).toBeInstanceOf(Uint16Array);
      expect(tensor.scales[0]!.toString(16)).toBe('28cd');
      expect(hex(tensor.B), 'B').toBe('a088888888888888');
      expect(matMulNBitsScale(tensor, 0, 0)).toBe(0.037506103515625);
    });

    it('leaves the padding of a short last block zero, as np.zeros left it (K = 40, block 32)', () => {
      const weight = row(40, { 0: -4, 1: 1, 32: -1, 33: 0.5 });
      const tensor = quantizeMatMulNBits(weight, 1, 40, 'onnx-q4-b32-sym-f32');
      expect(tensor.kBlocks).toBe(2);
      // Block 1 holds 8 weights: −1 → 0, 0.5 → 12, zeros → 8; the 12 bytes for k ≥ 40 stay 0.
      expect(blockHex(tensor, 0, 1), 'block 1').toBe(`c0888888${'00'.repeat(12)}`);
      expect(Array.from(tensor.scales)).toEqual([0.5, 0.125]);
    });

    it('packs the level of element K−2 into the unused nibble after an odd K, as MLAS does with its stale vi[1]', () => {
      // K = 49, block 16: element 48 is alone in block 3 and pairs with a padding slot. 48 is not the start
      // of a 32-row thread block, so MLAS packs vi[1] from the previous pair: the level of element 47.
      const weight = row(49, { 32: -1, 47: 0.5, 48: 3 });
      const tensor = quantizeMatMulNBits(weight, 1, 49, 'onnx-q4-b16-sym-f32');
      expect(levelAt(tensor, 0, 47)).toBe(12);
      expect(blockHex(tensor, 0, 3), 'block 3').toBe(`c0${'00'.repeat(7)}`);
      // K = 65: element 64 starts thread block 2, where vi is fresh zeros.
      const fresh = quantizeMatMulNBits(row(65, { 48: -1, 63: 0.5, 64: 3 }), 1, 65, 'onnx-q4-b16-sym-f32');
      expect(levelAt(fresh, 0, 63)).toBe(12);
      expect(blockHex(fresh, 0, 4), 'block 4').toBe('00'.repeat(8));
    });
  });

  describe('MatMulNBits 4-bit asymmetric (MLAS range2scalezp)', () => {
    it('quantizes a hand-computed block with its zero point', () => {
      // min −3, max 4.5: scale = 7.5/15 = 0.5, zp = roundf(3/0.5) = 6, level = roundf(2·x + 6):
      // −3 → 0, 4.5 → 15, 0.25 → 6.5 → 7, −0.25 → 5.5 → 6 (both ties away from zero), 0 → 6.
      const tensor = quantizeMatMulNBits(row(16, { 0: -3, 1: 4.5, 2: 0.25, 3: -0.25 }), 1, 16, 'onnx-q4-b16-asym-f32');
      expect(Array.from(tensor.scales)).toEqual([0.5]);
      expect(hex(tensor.B), 'B').toBe('f067666666666666');
      // One block: its zero point in the low nibble; the high nibble is MLAS's kMid filler, 8.
      expect(hex(tensor.zeroPoints!), 'zero points').toBe('86');
    });

    it('packs two zero points per byte, low nibble first, and fills an odd count with 8', () => {
      const weight = row(48, { 0: -3, 1: 4.5, 16: 1.5, 32: -1.5 });
      const tensor = quantizeMatMulNBits(weight, 1, 48, 'onnx-q4-b16-asym-f32');
      // Block 0: zp 6. Block 1 (all ≥ 0): min clamps to 0, zp 0. Block 2 (all ≤ 0): zp = 1.5/0.1 → 15.
      expect([0, 1, 2].map((block) => matMulNBitsZeroPoint(tensor, 0, block))).toEqual([6, 0, 15]);
      expect(hex(tensor.zeroPoints!), 'zero points').toBe('068f');
    });

    it('gives an all-zero block scale 0 and zero point 0', () => {
      const tensor = quantizeMatMulNBits(new Float32Array(16), 1, 16, 'onnx-q4-b16-asym-f16');
      expect(Array.from(tensor.scales)).toEqual([0]);
      expect(hex(tensor.zeroPoints!)).toBe('80');
      expect(hex(tensor.B)).toBe('00'.repeat(8));
      expect(Array.from(dequantizeMatMulNBits(tensor)).every((value) => value === 0)).toBe(true);
    });
  });

  describe('MatMulNBits 8-bit', () => {
    it('quantizes a hand-computed symmetric block: scale −(extreme)/128, levels around 128', () => {
      // ±2 tie → extreme −2, scale 2/128 = 1/64: 127/64 → 255; 2 → 256 → 255; 0.5/64 → 128.5 → 129; −0.5/64 → 127.5 → 128.
      const tensor = quantizeMatMulNBits(
        row(16, { 0: -2, 1: 127 / 64, 2: 2, 3: 0.5 / 64, 4: -0.5 / 64 }),
        1,
        16,
        'onnx-q8-b16-sym-f32',
      );
      expect(Array.from(tensor.scales)).toEqual([0.015625]);
      expect(hex(tensor.B), 'B').toBe(`00ffff8180${'80'.repeat(11)}`);
    });

    it('quantizes a hand-computed asymmetric block with one zero-point byte per block', () => {
      // min −0.5, max 1.4921875: scale = 1.9921875/255 = 1/128, zp = roundf(64) = 64, level = roundf(128·x + 64).
      const tensor = quantizeMatMulNBits(row(16, { 0: -0.5, 1: 1.4921875, 2: 1.5 / 128, 3: 2.5 / 128 }), 1, 16, 'onnx-q8-b16-asym-f32');
      expect(Array.from(tensor.scales)).toEqual([0.0078125]);
      expect(hex(tensor.B), 'B').toBe(`00ff4243${'40'.repeat(12)}`);
      expect(hex(tensor.zeroPoints!)).toBe('40');
    });

    it('leaves the padding of a short last block zero (K = 20, block 16)', () => {
      const tensor = quantizeMatMulNBits(row(20, { 16: -1 }), 1, 20, 'onnx-q8-b16-sym-f32');
      expect(blockHex(tensor, 0, 1), 'block 1').toBe(`00808080${'00'.repeat(12)}`);
    });
  });

  describe('MatMulNBits nibble and element order', () => {
    it('puts element 2i in the low nibble and element 2i+1 in the high nibble of byte i (runtimes.md §1)', () => {
      const levels = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];
      const weight = Float32Array.from(levels, (level) => (level - 8) / 2); // extreme −4 → scale 0.5, level = 2x + 8
      const tensor = quantizeMatMulNBits(weight, 1, 32, 'onnx-q4-b32-sym-f32');
      for (let i = 0; i < 16; i++) {
        expect(tensor.B[i]! & 0x0f, `low nibble of byte ${i}`).toBe(levels[2 * i]);
        expect(tensor.B[i]! >> 4, `high nibble of byte ${i}`).toBe(levels[2 * i + 1]);
      }
      expect(hex(tensor.B.subarray(0, 2))).toBe('1032');
    });

    it('orders B as [N, kBlocks, blob] and scales as [N·kBlocks], row by row', () => {
      const weight = new Float32Array(2 * 64);
      weight[0] = -8; // row 0 block 0 → scale 1
      weight[32] = -16; // row 0 block 1 → scale 2
      weight[64] = -4; // row 1 block 0 → scale 0.5
      weight[96] = -2; // row 1 block 1 → scale 0.25
      weight[97] = 0.25; // row 1 block 1, element 1 → level 9
      const tensor = quantizeMatMulNBits(weight, 2, 64, 'onnx-q4-b32-sym-f32');
      expect(Array.from(tensor.scales)).toEqual([1, 2, 0.5, 0.25]);
      expect(tensor.B[3 * 16]!.toString(16)).toBe('90');
    });

    it('writes the same bytes when the weight is streamed in row chunks', () => {
      const random = createRandom(11);
      const weight = Float32Array.from({ length: 5 * 70 }, () => random.normal());
      const whole = quantizeMatMulNBits(weight, 5, 70, 'onnx-q4-b32-asym-f16');
      const chunked = createMatMulNBitsTensor('onnx-q4-b32-asym-f16', 5, 70);
      quantizeMatMulNBitsRowsInto(chunked, weight.subarray(0, 140), 0);
      quantizeMatMulNBitsRowsInto(chunked, weight.subarray(140), 2);
      expect(hex(chunked.B)).toBe(hex(whole.B));
      expect(Array.from(chunked.scales)).toEqual(Array.from(whole.scales));
      expect(hex(chunked.zeroPoints!)).toBe(hex(whole.zeroPoints!));
    });
  });

  // ---------------------------------------------------------------------------------------- round trips

  describe('MatMulNBits round trips', () => {
    const random = createRandom(20240611);
    for (const layout of MATMULNBITS_LAYOUTS) {
      it(`dequantizes ${layout.id} to within half a step (a whole step at the clamped levels)`, () => {
        const N = 3;
        const K = 200; // not a multiple of 16·k: every block size has a short last block
        const weight = Float32Array.from({ length: N * K }, (_, index) => {
          const value = random.normal() * 0.05;
          return index % 37 === 5 ? value * 40 : value; // outliers
        });
        const tensor = quantizeMatMulNBits(weight, N, K, layout.id);
        const values = dequantizeMatMulNBits(tensor);
        const { maxLevel } = MATMULNBITS_BIT_WIDTHS[layout.bits];
        for (let n = 0; n < N; n++) {
          for (let k = 0; k < K; k++) {
            const block = Math.floor(k / layout.blockSize);
            const scale = Math.abs(matMulNBitsScale(tensor, n, block));
            const level = levelAt(tensor, n, k);
            // What the quantizer saw: the fp16 layouts read the weight as fp16 first.
            const seen = layout.scaleType === 'f16' ? f16ToF32(f32ToF16(weight[n * K + k]!)) : weight[n * K + k]!;
            const steps = level === 0 || level === maxLevel ? 1 : 0.5;
            const bound = scale * steps * (1 + 2 ** -10) + 1e-30;
            const error = Math.abs(values[n * K + k]! - seen);
            if (error > bound) {
              throw new Error(`${layout.id} row ${n} k ${k}: |${values[n * K + k]} − ${seen}| = ${error} > ${bound} (level ${level}, scale ${scale})`);
            }
          }
        }
      });
    }
  });

});

// -------------------------------------------------------------------------------------- MatMulInteger

describe('MatMulInteger weights (quantize_dynamic)', () => {
  it('quantizes int8 per channel with scale = 2·absmax/254 in float64, ties to even, and writes B as [K, N]', () => {
    // Row 0: absmax 127/64 → scale 1/64; 1.5 → 2 and 2.5 → 2 (ties to even). Row 1: absmax 1 → scale
    // float32(2/254) = 0.0078740157…; 0.5/scale is 63.5 in float32 → 64.
    const weight = Float32Array.from([127 / 64, 1.5 / 64, 2.5 / 64, -1, 0.5, 0]);
    const tensor = quantizeMatMulInteger(weight, 2, 3, 'onnx-matmulinteger-int8-per-channel');
    expect(tensor.B).toBeInstanceOf(Int8Array);
    expect(hex(tensor.B), 'B [K, N]').toBe('7f8102400200');
    expect(Array.from(tensor.scales)).toEqual([0.015625, Math.fround(2 / 254)]);
    expect(Array.from(tensor.zeroPoints)).toEqual([0, 0]);
    const values = dequantizeMatMulInteger(tensor);
    expect(values[0]).toBe(127 / 64);
    expect(values[3]).toBe(Math.fround(-127 * Math.fround(2 / 254)));
  });

  it('quantizes uint8 per channel with a zero point, rounding ties to even (MLAS would round 66.5 up)', () => {
    // min −0.5, max 1.4921875: scale = 1.9921875/255 = 1/128, zp = round(0.5·128) = 64; 2.5 → 2 → 66.
    const weight = Float32Array.from([-0.5, 1.4921875, 1.5 / 128, 2.5 / 128]);
    const tensor = quantizeMatMulInteger(weight, 1, 4, { weightType: 'uint8', granularity: 'per-channel' });
    expect(tensor.B).toBeInstanceOf(Uint8Array);
    expect(hex(tensor.B), 'B').toBe('00ff4242');
    expect(Array.from(tensor.scales)).toEqual([0.0078125]);
    expect(Array.from(tensor.zeroPoints)).toEqual([64]);
  });

  it('quantizes per tensor with one scale for every row', () => {
    const weight = Float32Array.from([127 / 64, 0.5, -1, 1.5 / 64]);
    const tensor = quantizeMatMulInteger(weight, 2, 2, 'onnx-matmulinteger-int8-per-tensor');
    expect(Array.from(tensor.scales)).toEqual([0.015625]);
    expect(hex(tensor.B), 'B [K, N]').toBe('7fc02002');
  });

  it('gives an all-zero channel scale 1 and zero point 0, as compute_scale_zp does below float32 tiny', () => {
    const tensor = quantizeMatMulInteger(new Float32Array(4), 1, 4, 'onnx-matmulinteger-uint8-per-channel');
    expect(Array.from(tensor.scales)).toEqual([1]);
    expect(Array.from(tensor.zeroPoints)).toEqual([0]);
    expect(hex(tensor.B)).toBe('00000000');
  });

  for (const layout of MATMULINTEGER_LAYOUTS) {
    it(`dequantizes ${layout.id} to within half a step (uint8: one step, for the rounded zero point)`, () => {
      const random = createRandom(7);
      const N = 6;
      const K = 50;
      const weight = Float32Array.from({ length: N * K }, () => random.normal() * 0.02 + (layout.symmetric ? 0 : 0.01));
      const tensor = quantizeMatMulInteger(weight, N, K, layout.id);
      const values = dequantizeMatMulInteger(tensor);
      for (let n = 0; n < N; n++) {
        const scale = tensor.scales[layout.granularity === 'per-channel' ? n : 0]!;
        const bound = scale * (layout.symmetric ? 0.5 : 1) * (1 + 2 ** -20);
        for (let k = 0; k < K; k++) {
          const error = Math.abs(values[n * K + k]! - weight[n * K + k]!);
          if (error > bound) throw new Error(`${layout.id} (${n}, ${k}): error ${error} > ${bound}`);
        }
      }
    });
  }
});

// -------------------------------------------------------------------------- agreement with ggml Q4_0

describe.each(KERNEL_BACKENDS)('with the %s kernels', (backend) => {
  useBackend(backend);

  describe('MatMulNBits 4-bit against ggml Q4_0 (specs/onnx.md §2.1)', () => {
    /** Q4_0's 32 levels: element j in the low nibble of qs[j], element j+16 in its high nibble. */
    function q4_0Levels(block: Uint8Array): number[] {
      return Array.from({ length: 32 }, (_, j) => (j < 16 ? block[2 + j]! & 0x0f : block[2 + j - 16]! >> 4));
    }

    it('gives the same levels as Q4_0 with fp32 scales when no ±extreme tie exists, in another nibble order', () => {
      const random = createRandom(99);
      let compared = 0;
      for (let trial = 0; trial < 3000; trial++) {
        const step = Math.exp((random.next() - 0.5) * 20);
        const weight = new Float32Array(32);
        weight[0] = -8 * step;
        for (let j = 1; j < 32; j++) {
          // Half-steps plus a hair of noise, to land on and around the rounding boundaries.
          const level = random.integer(-7, 7) + 0.5 + (trial % 2 === 0 ? 0 : (random.next() - 0.5) * 1e-6);
          weight[j] = level * step;
        }
        const onnx = quantizeMatMulNBits(weight, 1, 32, 'onnx-q4-b32-sym-f32');
        const ggml = new Uint8Array(18);
        quantizeRowQ4_0(weight, 0, ggml, 0, 32, null);
        const onnxLevels = Array.from({ length: 32 }, (_, k) => levelAt(onnx, 0, k));
        expect(onnxLevels, `trial ${trial}`).toEqual(q4_0Levels(ggml));
        compared++;
      }
      expect(compared).toBe(3000);
    });

    it('differs from Q4_0 when +a and −a tie for the largest magnitude', () => {
      const weight = row(32, { 0: 1, 1: -1 });
      const onnx = quantizeMatMulNBits(weight, 1, 32, 'onnx-q4-b32-sym-f32');
      const ggml = new Uint8Array(18);
      quantizeRowQ4_0(weight, 0, ggml, 0, 32, null);
      // Q4_0 keeps the first extreme (+1): d = −1/8, so 1 → 0 and −1 → 15. MLAS keeps −1: 1 → 15, −1 → 0.
      expect(q4_0Levels(ggml).slice(0, 2)).toEqual([0, 15]);
      expect([levelAt(onnx, 0, 0), levelAt(onnx, 0, 1)]).toEqual([15, 0]);
    });
  });

  // -------------------------------------------------------------------------------------------- fuzzing

  describe('ONNX layouts on hostile floats', () => {
    it('never throw and always write valid levels for NaN, ±inf, subnormals and huge values', () => {
      const random = createRandom(4242);
      const weight = Float32Array.from({ length: 4 * 96 }, () => floatFromBits(random.nextUint32()));
      weight[1] = Number.NaN;
      weight[2] = Number.POSITIVE_INFINITY;
      weight[3] = Number.NEGATIVE_INFINITY;
      weight[100] = 1e-45;
      for (const layout of MATMULNBITS_LAYOUTS) {
        const tensor = quantizeMatMulNBits(weight, 4, 96, layout.id);
        const { maxLevel } = MATMULNBITS_BIT_WIDTHS[layout.bits];
        let invalid = 0;
        for (let n = 0; n < 4; n++) for (let k = 0; k < 96; k++) if (!(levelAt(tensor, n, k) <= maxLevel)) invalid++;
        expect(invalid, layout.id).toBe(0);
        expect(dequantizeMatMulNBits(tensor)).toHaveLength(4 * 96);
      }
      for (const layout of MATMULINTEGER_LAYOUTS) {
        const tensor = quantizeMatMulInteger(weight, 4, 96, layout.id);
        const invalid = Array.from(tensor.B).filter((level) => !(level >= layout.clipMin && level <= layout.clipMax));
        expect(invalid, layout.id).toEqual([]);
      }
    });
  });
});
