/**
 * WebAssembly ports of the 32-element legacy quantizers (src/quant/legacy.ts is the reference; every
 * kernel here must give the same bytes). Exported kernels follow one ABI (src/quant/wasm/runtime.ts):
 *   quantize_<TYPE>(src, dst, rows, n, importance): src = rows·n float32, dst = rows·(n/32) blocks,
 *     importance = n float32 per column or 0 for none;
 *   dequantize_<TYPE>(src, dst, rows, n).
 */
import { absMax, loadF16, lowBytes, roundHalfAwayFromZeroX4, storeF16 } from './common';

export { heapBase } from './common';

const QK: i32 = 32;

// ---------------------------------------------------------------------------------------------- Q8_0

/** `quantize_row_q8_0_ref`; ggml ignores importance weights for Q8_0. */
export function quantize_Q8_0(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  const blocks = (rows * n) / QK;
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * QK * 4;
    const y = dst + <usize>block * 34;
    const amax = absMax(x, QK);
    const d: f32 = amax / 127;
    const inverse: f32 = d != 0 ? <f32>1 / d : 0;
    storeF16(y, d);
    const scale = f32x4.splat(inverse);
    for (let j = 0; j < QK; j += 16) {
      const p = x + (<usize>j << 2);
      const a = roundHalfAwayFromZeroX4(f32x4.mul(v128.load(p), scale));
      const b = roundHalfAwayFromZeroX4(f32x4.mul(v128.load(p, 16), scale));
      const c = roundHalfAwayFromZeroX4(f32x4.mul(v128.load(p, 32), scale));
      const e = roundHalfAwayFromZeroX4(f32x4.mul(v128.load(p, 48), scale));
      v128.store(y + 2 + j, lowBytes(a, b, c, e));
    }
  }
}

export function dequantize_Q8_0(src: usize, dst: usize, rows: i32, n: i32): void {
  const blocks = (rows * n) / QK;
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * 34;
    const y = dst + <usize>block * QK * 4;
    const d = loadF16(x);
    for (let j = 0; j < QK; j++) store<f32>(y + (<usize>j << 2), <f32>load<i8>(x + 2 + j) * d);
  }
}
