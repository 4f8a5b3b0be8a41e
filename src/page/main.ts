/**
 * The browser page `polyquant serve DIR` shows (bundled by scripts/build-page.mjs with the WGSL runtime
 * and the tokenizer). It loads the WebGPU folder from `./model/`, shows the adapter, load progress and
 * tokens/s, runs a fixed prompt, and continues the prompt in the text box greedily.
 *
 * For tests (test/webgpu-browser.test.ts) the page publishes `window.polyquant` (PageState): its status,
 * the adapter, and the logits of the fixed prompt's last position, which the test compares with the Node
 * engine's. URL parameters: `tokens` (new tokens for the continuation, default 32), `prompt` (the text
 * box's initial text), `auto=0` (do not continue the prompt on load).
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { fetchWeightSource, isSoftwareAdapterInfo, type LoadProgress, WebGpuModel } from '../runtime/webgpu/index.js';
import { FIXED_PROMPT } from './fixed-prompt.js';

interface PageState {
  status: 'loading' | 'ready' | 'running' | 'done' | 'error';
  error?: string;
  adapter?: { vendor: string; architecture: string; description: string; software: boolean; shaderF16: boolean };
  quantization?: string;
  loadSeconds?: number;
  fixedPrompt: string;
  fixedTokens?: number[];
  /** Logits of the fixed prompt's last position (length vocab). */
  fixedLogits?: number[];
  continuation?: { prompt: string; tokens: number[]; text: string; tokensPerSecond: number };
}

const state: PageState = { status: 'loading', fixedPrompt: FIXED_PROMPT };
(globalThis as unknown as { polyquant: PageState }).polyquant = state;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found as T;
}

function show(id: string, text: string): void {
  element(id).textContent = text;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if ((row[i] as number) > (row[best] as number)) best = i;
  return best;
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const newTokens = Math.max(1, Math.min(512, Number(params.get('tokens') ?? '32') || 32));
  const promptBox = element<HTMLTextAreaElement>('prompt');
  if (params.get('prompt') !== null) promptBox.value = params.get('prompt') as string;

  if (!('gpu' in navigator) || navigator.gpu === undefined) throw new Error('this browser has no WebGPU (navigator.gpu is missing)');
  const adapter = await navigator.gpu.requestAdapter();
  if (adapter === null) throw new Error('WebGPU found no adapter (in Chromium without a GPU, start it with --enable-unsafe-webgpu)');
  const info = adapter.info;
  const shaderF16 = adapter.features.has('shader-f16');
  state.adapter = {
    vendor: info.vendor,
    architecture: info.architecture,
    description: info.description,
    software: isSoftwareAdapterInfo(info) || (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter === true,
    shaderF16,
  };
  show(
    'adapter',
    `${[info.vendor, info.architecture, info.description].filter((part) => part !== '').join(' · ') || 'unnamed adapter'}${state.adapter.software ? ' (software)' : ''}; shader-f16 ${shaderF16 ? 'yes' : 'no'}`,
  );
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxBufferSize: adapter.limits.maxBufferSize,
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
    },
  });

  const source = fetchWeightSource('./model/');
  const [tokenizerJson, tokenizerConfig] = await Promise.all([
    source.readJson('tokenizer.json'),
    source.readJson('tokenizer_config.json').catch(() => ({})),
  ]);
  const tokenizer = new Tokenizer(tokenizerJson as Record<string, unknown>, tokenizerConfig as Record<string, unknown>);
  const encode = (text: string): Int32Array => Int32Array.from(tokenizer.encode(text, { add_special_tokens: false }).ids);

  const progress = element<HTMLProgressElement>('progress');
  const started = performance.now();
  const model = await WebGpuModel.load(device, source, {
    adapterInfo: info,
    onProgress: (done: LoadProgress) => {
      progress.value = done.totalBytes === 0 ? 1 : done.bytes / done.totalBytes;
      show('load', `${megabytes(done.bytes)} of ${megabytes(done.totalBytes)}, shard ${done.shard} of ${done.shards}`);
    },
  });
  state.loadSeconds = (performance.now() - started) / 1000;
  state.quantization = model.config.quantization;
  progress.value = 1;
  show('load', `${megabytes(model.manifest.records.reduce((sum, shard) => sum + shard.nbytes, 0))} in ${state.loadSeconds.toFixed(1)} s (${model.verifiedShards} shard${model.verifiedShards === 1 ? '' : 's'} sha256-checked)`);
  show('model', `${model.config.quantization} · ${model.config.numLayers} layers · hidden ${model.config.hiddenSize} · vocab ${model.config.vocabSize} · kernels: ${model.family}`);

  // The fixed prompt: its last position's logits are what the browser test compares with Node's.
  const fixedTokens = encode(FIXED_PROMPT);
  const fixedCache = model.newCache();
  const fixedLogits = await model.forward(fixedTokens, fixedCache, { logitsFrom: fixedTokens.length - 1 });
  fixedCache.dispose();
  state.fixedTokens = Array.from(fixedTokens);
  state.fixedLogits = Array.from(fixedLogits);
  show('fixed', `“${FIXED_PROMPT}” → ${JSON.stringify(tokenizer.decode([argmax(fixedLogits)]))} (${fixedTokens.length} tokens)`);
  state.status = 'ready';

  const run = element<HTMLButtonElement>('run');
  const continuePrompt = async (): Promise<void> => {
    run.disabled = true;
    state.status = 'running';
    const prompt = promptBox.value;
    const ids = encode(prompt);
    if (ids.length === 0) throw new Error('the prompt is empty');
    if (ids.length + newTokens > model.contextLength) throw new Error(`the prompt (${ids.length} tokens) and ${newTokens} new tokens exceed the context of ${model.contextLength}`);
    const cache = model.newCache();
    const generated: number[] = [];
    const output = element('output');
    const begin = performance.now();
    try {
      let logits = await model.forward(ids, cache, { logitsFrom: ids.length - 1 });
      for (let step = 0; step < newTokens; step++) {
        const next = argmax(logits);
        generated.push(next);
        output.replaceChildren(document.createTextNode(prompt), Object.assign(document.createElement('b'), { textContent: tokenizer.decode(generated) }));
        const seconds = (performance.now() - begin) / 1000;
        show('speed', `${(generated.length / seconds).toFixed(2)} tokens/s (prompt of ${ids.length} tokens included)`);
        if (step + 1 < newTokens) logits = await model.forward(Int32Array.of(next), cache);
      }
    } finally {
      cache.dispose();
    }
    const seconds = (performance.now() - begin) / 1000;
    state.continuation = { prompt, tokens: generated, text: tokenizer.decode(generated), tokensPerSecond: generated.length / seconds };
    state.status = 'done';
    run.disabled = false;
  };
  run.addEventListener('click', () => {
    continuePrompt().catch(fail);
  });
  run.disabled = false;
  if (params.get('auto') !== '0') await continuePrompt();
}

function fail(error: unknown): void {
  state.status = 'error';
  state.error = error instanceof Error ? error.message : String(error);
  show('error', state.error);
}

main().catch(fail);
