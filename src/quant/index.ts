/**
 * polyquant's quantization core: the ggml type table, byte-exact ggml quantizers and dequantizers, and
 * error statistics. The package entry re-exports this.
 */

export {
  canonicalGgmlTypeName,
  type DequantizeOptions,
  dequantizeRows,
  dequantizeRowsInto,
  type GgmlTypeNameAnyCase,
  type QuantizeOptions,
  quantizeRows,
  quantizeRowsInto,
  rowBytes,
  tensorBytes,
} from './api.js';
export {
  type DequantizeRowKernel,
  GGML_TYPE_BY_ID,
  GGML_TYPE_NAMES,
  GGML_TYPES,
  type GgmlTypeInfo,
  type GgmlTypeName,
  ggmlTypesForFormat,
  isGgmlTypeName,
  type OutputFormat,
  type QuantizeRowKernel,
  rowFitsBlocks,
} from './ggml-types.js';
export { createErrorStats, type ErrorStats, type ErrorStatsResult } from './metrics.js';
export { type KernelBackend, kernelBackend, setKernelBackend } from './wasm/runtime.js';
