/**
 * WebAssembly ports of the K-quant quantizers (src/quant/kquants.ts is the reference; every kernel here
 * must give the same bytes). Same ABI as assembly/legacy.ts.
 */
export { heapBase } from './common';
