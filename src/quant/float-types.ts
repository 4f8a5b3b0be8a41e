/**
 * Row kernels of the unquantized ggml types F32, F16 and BF16 (one element per "block"). ggml's
 * `ggml_quantize_chunk` copies F32, and converts with `ggml_fp32_to_fp16_row` /
 * `ggml_fp32_to_bf16_row_ref`; importance weights are ignored. The bit conversions live in
 * src/tensor/float.ts; these kernels work on float bits through Uint32Array views so NaN payloads
 * survive exactly as ggml writes them.
 */

import * as floatBitsModule from '../tensor/float.js';

// Module-local aliases: under some loaders (tsx) every use of an imported binding is a getter call,
// which keeps V8 from inlining the per-element conversions.
const { bf16ToF32Array, f16ToF32Array, f32BitsToBf16Bits, f32BitsToF16Bits } = floatBitsModule;

function floatBits(src: Float32Array, offset: number, n: number): Uint32Array {
  return new Uint32Array(src.buffer, src.byteOffset + offset * 4, n);
}

/** Copies the little-endian float32 bytes (ggml_quantize_chunk's memcpy for GGML_TYPE_F32). */
export function quantizeRowF32(src: Float32Array, srcOffset: number, dst: Uint8Array, dstOffset: number, n: number): void {
  dst.set(new Uint8Array(src.buffer, src.byteOffset + srcOffset * 4, n * 4), dstOffset);
}

export function dequantizeRowF32(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  new Uint8Array(dst.buffer, dst.byteOffset + dstOffset * 4, n * 4).set(src.subarray(srcOffset, srcOffset + n * 4));
}

export function quantizeRowF16(src: Float32Array, srcOffset: number, dst: Uint8Array, dstOffset: number, n: number): void {
  const bits = floatBits(src, srcOffset, n);
  for (let i = 0; i < n; i++) {
    const half = f32BitsToF16Bits(bits[i]!);
    dst[dstOffset + 2 * i] = half & 0xff;
    dst[dstOffset + 2 * i + 1] = half >>> 8;
  }
}

export function dequantizeRowF16(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  f16ToF32Array(halfView(src, srcOffset, n), dst.subarray(dstOffset, dstOffset + n));
}

export function quantizeRowBF16(src: Float32Array, srcOffset: number, dst: Uint8Array, dstOffset: number, n: number): void {
  const bits = floatBits(src, srcOffset, n);
  for (let i = 0; i < n; i++) {
    const half = f32BitsToBf16Bits(bits[i]!);
    dst[dstOffset + 2 * i] = half & 0xff;
    dst[dstOffset + 2 * i + 1] = half >>> 8;
  }
}

export function dequantizeRowBF16(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  bf16ToF32Array(halfView(src, srcOffset, n), dst.subarray(dstOffset, dstOffset + n));
}

/**
 * A Uint16Array over `n` halves at byte `offset`. Zero-copy when the bytes are 2-aligned (the usual
 * case: rows of a tensor); otherwise the halves are assembled into a fresh array.
 */
function halfView(src: Uint8Array, offset: number, n: number): Uint16Array {
  const start = src.byteOffset + offset;
  if (start % 2 === 0) return new Uint16Array(src.buffer, start, n);
  const halves = new Uint16Array(n);
  for (let i = 0; i < n; i++) halves[i] = src[offset + 2 * i]! | (src[offset + 2 * i + 1]! << 8);
  return halves;
}
