import { afterEach, describe, expect, it } from 'vitest';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { gptqFactor, gptqQuantizeRows, outputError } from '../src/quant/gptq.js';
import {
  gptqQuantizeChunk,
  gptqQuantizeMatMulNBits,
  gptqQuantizeWebGpu,
  isGptqChunkLayout,
  MatMulNBitsGptqQuantizer,
  WebGpuGptqQuantizer,
} from '../src/quant/gptq-layouts.js';
import { setKernelBackend } from '../src/quant/index.js';
import {
  createMatMulNBitsTensor,
  dequantizeMatMulNBits,
  MATMULNBITS_LAYOUTS,
  type MatMulNBitsTensor,
  quantizeMatMulNBits,
  quantizeOnnxRows,
} from '../src/quant/onnx-layouts.js';
import {
  createWebGpuTensor,
  dequantizeWebGpu,
  quantizeWebGpu,
  quantizeWebGpuChunk,
  type WebGpuGroupTensor,
  webGpuChunkLayoutId,
} from '../src/quant/webgpu-layouts.js';
import { createRandom, type Random } from './helpers/quant-random.js';

// ------------------------------------------------------------------------------------------ helpers

function hex(bytes: ArrayLike<number>): string {
  return Array.from(bytes, (byte) => (byte & 0xff).toString(16).padStart(2, '0')).join('');
}

/** Byte arrays equal, or a readable diff: the first differing chunk of `unit` bytes in hex (STYLE.md §12). */
function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what: string, unit = 16): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      const start = Math.floor(i / unit) * unit;
      expect(hex(actual.subarray(start, start + unit)), `${what}: bytes ${start}…`).toBe(hex(expected.subarray(start, start + unit)));
    }
  }
}

function bytesOf(array: ArrayBufferView): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

/**
 * Weights like a trained linear's: normal rows with per-row and per-column magnitudes, a few outliers,
 * and exact ± ties and zero blocks so that the scale rules' corner cases (MLAS' tie sign, zero scales) show.
 */
function weights(random: Random, N: number, K: number): Float32Array {
  const out = new Float32Array(N * K);
  const columnScale = Float64Array.from({ length: K }, () => 0.5 + random.next());
  for (let r = 0; r < N; r++) {
    const rowScale = 0.01 * (0.5 + 2 * random.next());
    for (let c = 0; c < K; c++) out[r * K + c] = rowScale * (columnScale[c] as number) * random.normal() * (random.next() < 0.01 ? 8 : 1);
  }
  // Row 1: an exact ± tie in every 16 columns (MLAS keeps the negative end); row 2's first 16 columns are 0.
  if (N > 2) {
    for (let c = 0; c + 1 < K; c += 16) {
      out[K + c] = 0.05;
      out[K + c + 1] = -0.05;
    }
    out.fill(0, 2 * K, 2 * K + Math.min(16, K));
  }
  return out;
}

/** A diagonal "Hessian": positive, uneven importance, nothing off the diagonal. */
function diagonalHessian(random: Random, K: number): Float64Array {
  const H = new Float64Array(K * K);
  for (let i = 0; i < K; i++) H[i * K + i] = 0.1 + 3 * random.next();
  return H;
}

/**
 * Σ x xᵀ / T over activations that look like a transformer's: a few shared directions (strong correlations
 * between columns), some columns much louder than the rest, and noise.
 */
function correlatedHessian(random: Random, K: number, tokens = 1500): Float64Array {
  const rank = 8;
  const mix = Array.from({ length: K }, () => Float64Array.from({ length: rank }, () => random.normal()));
  const loud = Float64Array.from({ length: K }, () => (random.next() < 0.05 ? 6 : 1));
  const H = new Float64Array(K * K);
  const x = new Float64Array(K);
  const z = new Float64Array(rank);
  for (let t = 0; t < tokens; t++) {
    for (let k = 0; k < rank; k++) z[k] = random.normal();
    for (let i = 0; i < K; i++) {
      let sum = 0.3 * random.normal();
      const m = mix[i] as Float64Array;
      for (let k = 0; k < rank; k++) sum += (m[k] as number) * (z[k] as number);
      x[i] = sum * (loud[i] as number);
    }
    for (let i = 0; i < K; i++) {
      const xi = (x[i] as number) / tokens;
      for (let j = 0; j <= i; j++) H[i * K + j] = (H[i * K + j] as number) + xi * (x[j] as number);
    }
  }
  for (let i = 0; i < K; i++) for (let j = 0; j < i; j++) H[j * K + i] = H[i * K + j] as number;
  return H;
}

afterEach(() => setKernelBackend('wasm'));

// ----------------------------------------------------------------------- byte identity without feedback

describe('GPTQ adapters with a diagonal Hessian (nothing propagates)', () => {
  const shapes = (blockSize: number): number[] => [3 * blockSize, 2 * blockSize + 5, 2 * blockSize + 1, 7];

  for (const layout of MATMULNBITS_LAYOUTS) {
    it(`write exactly the RTN kernel's bytes: ${layout.id} (K whole blocks, a short last block, odd K at a thread-block start, K < block)`, () => {
      const random = createRandom(layout.bits * 1000 + layout.blockSize + (layout.symmetric ? 1 : 2) + (layout.scaleType === 'f16' ? 7 : 0));
      for (const K of shapes(layout.blockSize)) {
        const N = 5;
        const weight = weights(random, N, K);
        const factor = gptqFactor(diagonalHessian(random, K), K, { dampening: 0 });
        const gptq = gptqQuantizeMatMulNBits(weight, N, K, layout.id, factor);
        for (const backend of ['wasm', 'js'] as const) {
          setKernelBackend(backend);
          const rtn = quantizeMatMulNBits(weight, N, K, layout.id);
          const where = `${layout.id} K=${K} ${backend}`;
          expectSameBytes(gptq.B, rtn.B, `${where} B`, layout.blobBytes);
          expectSameBytes(bytesOf(gptq.scales), bytesOf(rtn.scales), `${where} scales`);
          if (!layout.symmetric) expectSameBytes(gptq.zeroPoints as Uint8Array, rtn.zeroPoints as Uint8Array, `${where} zero points`);
        }
      }
    });
  }

  for (const name of ['q4f16_1', 'q4f32_1', 'q8f16_pq', 'q8f32_pq'] as const) {
    it(`write exactly the RTN kernel's bytes: ${name} (K whole groups and a short last group)`, () => {
      const random = createRandom(name.length * 31 + name.charCodeAt(1));
      for (const K of [96, 70, 9]) {
        const N = 5;
        const weight = weights(random, N, K);
        const factor = gptqFactor(diagonalHessian(random, K), K, { dampening: 0 });
        const gptq = gptqQuantizeWebGpu(name, weight, N, K, factor);
        for (const backend of ['wasm', 'js'] as const) {
          setKernelBackend(backend);
          const rtn = quantizeWebGpu(name, weight, N, K) as WebGpuGroupTensor;
          expectSameBytes(bytesOf(gptq.qWeight), bytesOf(rtn.qWeight), `${name} K=${K} ${backend} q_weight`);
          expectSameBytes(bytesOf(gptq.qScale), bytesOf(rtn.qScale), `${name} K=${K} ${backend} q_scale`);
        }
      }
    });
  }

  it('pack chunks exactly as the pool packs the RTN chunk (MatMulNBits parts; WebGPU parts under raw and bf16 storage)', () => {
    const random = createRandom(99);
    const K = 64;
    const rows = weights(random, 6, K);
    const factor = gptqFactor(diagonalHessian(random, K), K, { dampening: 0 });
    for (const id of ['onnx-q4-b32-sym-f32', 'onnx-q4-b16-asym-f16', 'onnx-q8-b64-asym-f32', 'onnx-q4-b32-asym-f32']) {
      expectSameBytes(gptqQuantizeChunk(id, rows, K, factor), quantizeOnnxRows(id, rows.slice(), K), id);
    }
    for (const name of ['q4f16_1', 'q4f32_1', 'q8f16_pq', 'q8f32_pq'] as const) {
      for (const storage of ['raw', 'bf16'] as const) {
        const id = webGpuChunkLayoutId(name, storage);
        expectSameBytes(gptqQuantizeChunk(id, rows, K, factor), quantizeWebGpuChunk(id, rows.slice(), K), id);
      }
    }
  });
});

// ------------------------------------------------------------------------- what feedback sees and does

/** Runs GPTQ through `quantizer`, recording every value it hands back as dequantized, in [N, K] order. */
function returnedValues(weight: Float32Array, N: number, K: number, factor: ReturnType<typeof gptqFactor>, quantizer: MatMulNBitsGptqQuantizer | WebGpuGptqQuantizer): Float32Array {
  const out = new Float32Array(N * K);
  gptqQuantizeRows(weight, N, 0, factor, {
    groupSize: quantizer.groupSize,
    fitGroup: (row, column, values) => quantizer.fitGroup(row, column, values),
    quantize: (row, column, value) => {
      const result = quantizer.quantize(row, column, value);
      out[row * K + column] = result;
      return result;
    },
  });
  return out;
}

describe('GPTQ adapters with a calibration Hessian', () => {
  const N = 24;
  const K = 128;
  const random = createRandom(7);
  const weight = weights(random, N, K);
  const H = correlatedHessian(random, K);
  const factor = gptqFactor(H, K);

  it('hand GPTQ exactly the value the runtime multiplies by (MatMulNBits; MLC int4 in fp16; q4f32_1 scales as bf16 on disk)', () => {
    for (const id of ['onnx-q4-b32-sym-f16', 'onnx-q4-b32-asym-f32', 'onnx-q8-b16-sym-f32']) {
      const tensor: MatMulNBitsTensor = createMatMulNBitsTensor(id, N, K);
      const returned = returnedValues(weight, N, K, factor, new MatMulNBitsGptqQuantizer(tensor));
      expect(Array.from(returned), id).toEqual(Array.from(dequantizeMatMulNBits(tensor)));
    }
    for (const [name, storage] of [['q4f16_1', 'raw'], ['q4f32_1', 'bf16'], ['q8f16_pq', 'raw']] as const) {
      const tensor = createWebGpuTensor(name, N, K) as WebGpuGroupTensor;
      const returned = returnedValues(weight, N, K, factor, new WebGpuGptqQuantizer(tensor, 0, { storage }));
      expect(Array.from(returned), name).toEqual(Array.from(dequantizeWebGpu(tensor, { asStoredOnDisk: storage === 'bf16' })));
    }
  });

  it('leave a lower output error (w − q)ᵀ H (w − q) than round-to-nearest, for every layout family', () => {
    const identity = gptqFactor(diagonalHessian(createRandom(1), K), K, { dampening: 0 });
    for (const id of ['onnx-q4-b32-sym-f32', 'onnx-q4-b32-asym-f32', 'onnx-q4-b128-sym-f16', 'onnx-q8-b32-sym-f32']) {
      const rtn = outputError(weight, dequantizeMatMulNBits(gptqQuantizeMatMulNBits(weight, N, K, id, identity)), N, H, K);
      const gptq = outputError(weight, dequantizeMatMulNBits(gptqQuantizeMatMulNBits(weight, N, K, id, factor)), N, H, K);
      expect(gptq, id).toBeLessThan(0.8 * rtn);
    }
    for (const name of ['q4f16_1', 'q4f32_1', 'q8f32_pq'] as const) {
      const rtn = outputError(weight, dequantizeWebGpu(quantizeWebGpu(name, weight, N, K)), N, H, K);
      const gptq = outputError(weight, dequantizeWebGpu(gptqQuantizeWebGpu(name, weight, N, K, factor)), N, H, K);
      expect(gptq, name).toBeLessThan(0.8 * rtn);
    }
  });
});

// ---------------------------------------------------------------------------------------------- errors

describe('GPTQ adapters refuse what they cannot fill', () => {
  const factor = gptqFactor(diagonalHessian(createRandom(5), 32), 32, { dampening: 0 });

  it('refuses a Hessian whose size is not the rows\' length, naming both', () => {
    const weight = new Float32Array(2 * 64);
    for (const action of [
      () => gptqQuantizeMatMulNBits(weight, 2, 64, 'onnx-q4-b32-sym-f32', factor),
      () => gptqQuantizeWebGpu('q4f16_1', weight, 2, 64, factor),
      () => gptqQuantizeChunk('webgpu:q4f16_1:raw', weight, 64, factor),
    ]) {
      expect(action).toThrowError(PolyquantError);
      try {
        action();
      } catch (error) {
        expect((error as PolyquantError).code).toBe(ERROR_CODES.CONFIG);
        expect((error as PolyquantError).message).toMatch(/32 columns .* K = 64/);
      }
    }
  });

  it('refuses layouts without levels (q0f16, MatMulInteger) with a usage error', () => {
    expect(isGptqChunkLayout('webgpu:q0f16:raw')).toBe(false);
    expect(isGptqChunkLayout('onnx-matmulinteger-int8-per-channel')).toBe(false);
    expect(isGptqChunkLayout('onnx-q4-b32-sym-f32')).toBe(true);
    expect(isGptqChunkLayout('webgpu:q4f32_1:bf16')).toBe(true);
    const weight = new Float32Array(32);
    for (const action of [
      () => gptqQuantizeWebGpu('q0f16', weight, 1, 32, factor),
      () => gptqQuantizeChunk('webgpu:q0f16:raw', weight, 32, factor),
      () => gptqQuantizeChunk('onnx-matmulinteger-int8-per-channel', weight, 32, factor),
    ]) {
      try {
        action();
        throw new Error('expected a PolyquantError');
      } catch (error) {
        expect(error).toBeInstanceOf(PolyquantError);
        expect((error as PolyquantError).code).toBe(ERROR_CODES.USAGE);
      }
    }
  });
});
