/**
 * polyquant's WebGPU runtime: GPT-NeoX over an MLC tensor-cache folder (`polyquant convert --to webgpu`),
 * in WGSL, for any GPUDevice — Dawn in Node (the `webgpu` verify engine) or a browser's `navigator.gpu`
 * (the page `polyquant serve` shows). Browser-safe: WebGPU globals and standard JS only; no Node import.
 *
 * Usage (a browser page):
 *
 *   import { fetchWeightSource, WebGpuModel } from './runtime/webgpu/index.js';
 *   const adapter = await navigator.gpu.requestAdapter();
 *   const device = await adapter.requestDevice({ requiredLimits: {
 *     maxBufferSize: adapter.limits.maxBufferSize,
 *     maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize } });
 *   const model = await WebGpuModel.load(device, fetchWeightSource('./model/'), {
 *     adapterInfo: adapter.info, onProgress: ({ bytes, totalBytes }) => … });
 *   const cache = model.newCache();
 *   let logits = await model.forward(promptIds, cache, { logitsFrom: promptIds.length - 1 });  // last row
 *   // greedy: next = argmax(logits); logits = await model.forward(Int32Array.of(next), cache); …
 *   model.truncate(cache, n);   // forget positions ≥ n (e.g. to reuse a shared prefix)
 *   cache.dispose(); model.dispose();
 *
 * - `WebGpuModel.load(device, source, options)` reads `tensor-cache.json` and `mlc-chat-config.json`,
 *   checks every record it needs, streams the shards one at a time (each shard's sha256 checked with
 *   WebCrypto where the manifest has one), and compiles the kernels. Options: `onProgress`, `adapterInfo`
 *   (picks the kernel family: software adapters get barrier-free kernels), `family` to force one,
 *   `contextLength`, `stepTokens`, `maxBindingBytes` (lower binding windows), `verifyHashes`.
 * - `forward(tokens, cache, { logitsFrom })` → Float32Array [(T − logitsFrom) × vocab] logits; the tokens
 *   are appended to the cache. Calls queue; one runs at a time.
 * - Errors are `PolyquantError`s (src/errors.ts) with a `code` (`not-found` for a missing file, `malformed`
 *   for a bad manifest or a sha256 mismatch, `unsupported` for a tensor the device cannot hold or bind, `usage`
 *   for bad arguments) and a message naming the file/tensor, the value and the limit.
 * - The tokenizer is not part of the runtime: the page tokenizes with tokenizer.json itself.
 */
export { CHAT_CONFIG_FILE, parseChatConfig, type WebGpuModelConfig } from './config.js';
export { GpuContext, type GpuContextOptions, isSoftwareAdapterInfo } from './gpu.js';
export type { KernelFamily, ScaleFormat, WeightFormat } from './kernels.js';
export { type ForwardOptions, type LoadProgress, WebGpuKvCache, WebGpuModel, type WebGpuModelOptions } from './model.js';
export { type FetchWeightSourceOptions, fetchWeightSource, type WeightSource } from './source.js';
