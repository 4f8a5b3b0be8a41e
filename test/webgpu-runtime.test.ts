/// <reference types="@webgpu/types" />
/**
 * The WGSL runtime's kernels against CPU oracles: every matmul-dequant layout against dequantizeWebGpu and a
 * float64 product (tile and split kernels, one and several tokens, K that is not a multiple of the chunk or
 * the group, binding windows), the embedding gather, LayerNorm, GELU against the reference engine's erf.
 * Needs a WebGPU adapter: Dawn with SwiftShader here; the whole file skips, saying why, without one.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve, sep } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PolyquantError } from '../src/errors.js';
import { dequantizeWebGpu, quantizeWebGpu, WEBGPU_LAYOUTS, type WebGpuLayoutName, type WebGpuTensor } from '../src/quant/webgpu-layouts.js';
import { f16ToF32Array } from '../src/tensor/float.js';
import { parseChatConfig } from '../src/runtime/webgpu/config.js';
import { GpuContext, Recorder } from '../src/runtime/webgpu/gpu.js';
import { GELU_WGSL, type KernelFamily, type ScaleFormat, type WeightFormat } from '../src/runtime/webgpu/kernels.js';
import { gatherSource, layerNormSource, matmulSource, recordGather, recordLayerNorm, recordMatmul } from '../src/runtime/webgpu/ops.js';
import { fetchWeightSource } from '../src/runtime/webgpu/source.js';
import { createMatrix, planWindows, type WeightMatrix } from '../src/runtime/webgpu/weights.js';
import { geluErf, geluTanh } from '../src/verify/engines/reference-math.js';
import { createRandom } from './helpers/quant-random.js';
import { openTestDevice, readBuffer, withErrorScope } from './helpers/webgpu.js';

const { dawn, reason } = await openTestDevice();
if (dawn === undefined) console.warn(`webgpu-runtime tests skipped: no WebGPU adapter (${reason})`);
afterAll(() => dawn?.release());

const REPO = resolve(import.meta.dirname, '..');
const STORAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

function floatBuffer(device: GPUDevice, values: Float32Array): GPUBuffer {
  const buffer = device.createBuffer({ size: Math.max(4, values.byteLength), usage: STORAGE() });
  device.queue.writeBuffer(buffer, 0, values);
  return buffer;
}

/** The runtime's view of a layout: weight format and scale format. */
function runtimeFormat(layout: WebGpuLayoutName): { format: WeightFormat; scale: ScaleFormat | undefined } {
  const row = WEBGPU_LAYOUTS[layout];
  if (row.kind === 'no-quant') return { format: row.modelDType === 'float16' ? 'f16' : 'f32', scale: undefined };
  return { format: row.bits === 4 ? 'q4' : 'q8', scale: row.scaleDType === 'float16' ? 'f16' : 'f32' };
}

/**
 * What the kernels compute for a tensor: dequantizeWebGpu of the same levels with float32 scales (for
 * q4f16_1 the float32 product of the level and the widened fp16 scale; the kernels skip MLC's fp16 rounding).
 */
function oracleWeights(tensor: WebGpuTensor): Float32Array {
  if (tensor.kind === 'group-quant' && tensor.qScale instanceof Uint16Array && tensor.layout.source === 'mlc') {
    return dequantizeWebGpu({ ...tensor, layout: WEBGPU_LAYOUTS.q4f32_1, qScale: f16ToF32Array(tensor.qScale) });
  }
  return dequantizeWebGpu(tensor);
}

function uploadTensor(context: GpuContext, tensor: WebGpuTensor, name: string): WeightMatrix {
  const { format, scale } = runtimeFormat(tensor.layout.name);
  const spec = { name, format, scale, N: tensor.N, K: tensor.K };
  if (tensor.kind === 'no-quant') return createMatrix(context, spec, tensor.weight);
  return createMatrix(context, spec, tensor.qWeight, tensor.qScale);
}

function randomMatrix(seed: number, rows: number, columns: number, scale = 1): Float32Array {
  const random = createRandom(seed);
  return Float32Array.from({ length: rows * columns }, () => random.normal() * scale);
}

/** y = x·Wᵀ (+ bias) in float64, and the bound Σ|x·w| per output for the tolerance. */
function referenceProduct(x: Float32Array, w: Float32Array, T: number, N: number, K: number, bias?: Float32Array): { y: Float64Array; magnitude: Float64Array } {
  const y = new Float64Array(T * N);
  const magnitude = new Float64Array(T * N);
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      let sum = 0;
      let size = 0;
      for (let k = 0; k < K; k++) {
        const product = x[t * K + k]! * w[n * K + k]!;
        sum += product;
        size += Math.abs(product);
      }
      y[t * N + n] = sum + (bias?.[n] ?? 0);
      magnitude[t * N + n] = size + Math.abs(bias?.[n] ?? 0);
    }
  }
  return { y, magnitude };
}

/** The largest |gpu − reference| / (Σ|x·w| + 1) over all outputs. */
function worstRelative(gpu: Float32Array, reference: { y: Float64Array; magnitude: Float64Array }): number {
  let worst = 0;
  for (let i = 0; i < gpu.length; i++) worst = Math.max(worst, Math.abs(gpu[i]! - reference.y[i]!) / (reference.magnitude[i]! + 1));
  return worst;
}

async function runMatmul(
  context: GpuContext,
  matrix: WeightMatrix,
  x: Float32Array,
  T: number,
  options: { kind?: 'tile' | 'split'; bias?: Float32Array } = {},
): Promise<Float32Array> {
  const device = context.device;
  const xBuffer = floatBuffer(device, x);
  const yBuffer = device.createBuffer({ size: T * matrix.N * 4, usage: STORAGE() });
  const biasBuffer = options.bias === undefined ? undefined : floatBuffer(device, options.bias);
  const call = { T, bias: biasBuffer, ...(options.kind !== undefined && { kind: options.kind }) };
  await context.pipeline(matmulSource(context, matrix, call));
  return withErrorScope(device, async () => {
    const recorder = new Recorder(context);
    recordMatmul(recorder, context, matrix, { ...call, x: xBuffer, y: yBuffer });
    device.queue.submit([recorder.finish()]);
    const result = new Float32Array(await readBuffer(device, yBuffer, T * matrix.N * 4));
    for (const buffer of [xBuffer, yBuffer, biasBuffer]) buffer?.destroy();
    return result;
  });
}

const LAYOUTS: readonly WebGpuLayoutName[] = ['q4f16_1', 'q4f32_1', 'q8f16_pq', 'q8f32_pq', 'q0f16', 'q0f32'];

describe.skipIf(dawn === undefined)('WebGPU matmul-dequant kernels against dequantizeWebGpu and a float64 product', () => {
  const families: KernelFamily[] = ['software', 'hardware'];
  const contexts = new Map(families.map((family) => [family, new GpuContext(dawn!.device, { family }, dawn!.adapterInfo)]));
  const software = contexts.get('software')!;

  for (const layout of LAYOUTS) {
    it(`${layout}: tile kernel for 1, 6 and 11 tokens, K of whole groups, a partial group, and not a multiple of 8`, async () => {
      for (const [index, K] of [256, 264, 100, 77].entries()) {
        if (layout === 'q0f16' && K % 2 === 1) continue;
        const N = 23;
        const tensor = quantizeWebGpu(layout, randomMatrix(10 + index, N, K, 0.05), N, K);
        const matrix = uploadTensor(software, tensor, `w${K}`);
        const weights = oracleWeights(tensor);
        const bias = randomMatrix(99, 1, N);
        for (const T of [1, 6, 11]) {
          const x = randomMatrix(20 + T, T, K);
          const gpu = await runMatmul(software, matrix, x, T, { bias });
          expect(worstRelative(gpu, referenceProduct(x, weights, T, N, K, bias)), `K ${K}, T ${T}`).toBeLessThan(2e-6);
        }
        matrix.weight.destroy();
        matrix.scales?.destroy();
      }
    });
  }

  it('split-K GEMV (the hardware kernel for one token) equals the float64 product for every layout', async () => {
    const hardware = contexts.get('hardware')!;
    for (const layout of LAYOUTS) {
      const N = 37;
      const K = 320;
      const tensor = quantizeWebGpu(layout, randomMatrix(31, N, K, 0.05), N, K);
      const matrix = uploadTensor(hardware, tensor, 'split');
      const x = randomMatrix(32, 1, K);
      const gpu = await runMatmul(hardware, matrix, x, 1, { kind: 'split' });
      expect(worstRelative(gpu, referenceProduct(x, oracleWeights(tensor), 1, N, K)), layout).toBeLessThan(2e-6);
      matrix.weight.destroy();
      matrix.scales?.destroy();
    }
  });

  it('binds matrices larger than the binding limit as aligned row windows, with the same results', async () => {
    // 8 KiB windows: a q4 row of K = 128 is 64 bytes of words and 8 of f16 scales, so a window starts every
    // lcm(256/64, 256/8) = 32 rows and holds 128; q8 (128 + 8 bytes) 64 rows; f32 (512 bytes) 16 rows.
    const N = 300;
    const K = 128;
    for (const layout of LAYOUTS) {
      const { format, scale } = runtimeFormat(layout);
      const small = new GpuContext(dawn!.device, { family: 'software', maxBindingBytes: 8192 }, dawn!.adapterInfo);
      const windows = planWindows({ name: 'w', format, scale, N, K }, small.maxBindingBytes, small.storageAlignment);
      expect(windows.length, layout).toBeGreaterThan(1);
      for (const window of windows) {
        expect(window.weightOffset % small.storageAlignment).toBe(0);
        expect(window.scaleOffset % small.storageAlignment).toBe(0);
        expect(window.weightSize).toBeLessThanOrEqual(8192);
      }
      const tensor = quantizeWebGpu(layout, randomMatrix(41, N, K, 0.05), N, K);
      const matrix = uploadTensor(small, tensor, 'windowed');
      expect(matrix.windows.length).toBe(windows.length);
      const weights = oracleWeights(tensor);
      for (const T of [1, 5]) {
        const x = randomMatrix(42, T, K);
        const gpu = await runMatmul(small, matrix, x, T);
        expect(worstRelative(gpu, referenceProduct(x, weights, T, N, K)), `${layout} T ${T}`).toBeLessThan(2e-6);
      }
      // The gather picks each token's row from its window.
      const tokens = Uint32Array.of(0, 299, 128, 17, 255, 256);
      const gathered = await runGather(small, matrix, tokens);
      for (const [t, token] of tokens.entries()) {
        expect(Array.from(gathered.subarray(t * K, (t + 1) * K))).toEqual(Array.from(weights.subarray(token * K, (token + 1) * K)));
      }
      matrix.weight.destroy();
      matrix.scales?.destroy();
    }
  });

  it('refuses a window limit that cannot hold one aligned granule of rows, naming the tensor and the limit', () => {
    expect(() => planWindows({ name: 'gpt_neox.embed_in', format: 'q4', scale: 'f16', N: 1000, K: 96 }, 1024, 256)).toThrow(/embed_in.*binding limit 1024/);
  });

  async function runGather(context: GpuContext, matrix: WeightMatrix, tokens: Uint32Array): Promise<Float32Array> {
    const device = context.device;
    const tokenBuffer = device.createBuffer({ size: tokens.byteLength, usage: STORAGE() });
    device.queue.writeBuffer(tokenBuffer, 0, tokens);
    const out = device.createBuffer({ size: tokens.length * matrix.K * 4, usage: STORAGE() });
    await context.pipeline(gatherSource(context, matrix));
    return withErrorScope(device, async () => {
      const recorder = new Recorder(context);
      recordGather(recorder, context, matrix, tokenBuffer, 0, tokens.length, out);
      device.queue.submit([recorder.finish()]);
      const result = new Float32Array(await readBuffer(device, out, tokens.length * matrix.K * 4));
      tokenBuffer.destroy();
      out.destroy();
      return result;
    });
  }

  it('gathers embedding rows of every layout exactly as dequantizeWebGpu (odd K included)', async () => {
    for (const layout of LAYOUTS) {
      const K = layout === 'q0f16' ? 70 : 77;
      const tensor = quantizeWebGpu(layout, randomMatrix(51, 40, K, 0.1), 40, K);
      const matrix = uploadTensor(software, tensor, 'embed');
      const tokens = Uint32Array.of(3, 39, 0, 3);
      const gathered = await runGather(software, matrix, tokens);
      const weights = oracleWeights(tensor);
      for (const [t, token] of tokens.entries()) {
        expect(Array.from(gathered.subarray(t * K, (t + 1) * K)), layout).toEqual(Array.from(weights.subarray(token * K, (token + 1) * K)));
      }
      matrix.weight.destroy();
      matrix.scales?.destroy();
    }
  });

  it('LayerNorm (both families) matches a float64 LayerNorm within 2e-6', async () => {
    const rows = 5;
    for (const H of [256, 70]) {
      const x = randomMatrix(61, rows, H, 3);
      for (let i = 0; i < x.length; i++) x[i] = x[i]! + 10;
      const gamma = randomMatrix(62, 1, H);
      const beta = randomMatrix(63, 1, H);
      for (const context of contexts.values()) {
        const device = context.device;
        const [xb, gb, bb] = [x, gamma, beta].map((values) => floatBuffer(device, values)) as [GPUBuffer, GPUBuffer, GPUBuffer];
        const yb = device.createBuffer({ size: x.byteLength, usage: STORAGE() });
        await context.pipeline(layerNormSource(context));
        const y = await withErrorScope(device, async () => {
          const recorder = new Recorder(context);
          recordLayerNorm(recorder, context, xb, yb, gb, bb, rows, H, 1e-5);
          device.queue.submit([recorder.finish()]);
          return new Float32Array(await readBuffer(device, yb, x.byteLength));
        });
        for (let row = 0; row < rows; row++) {
          let mean = 0;
          for (let i = 0; i < H; i++) mean += x[row * H + i]!;
          mean /= H;
          let variance = 0;
          for (let i = 0; i < H; i++) variance += (x[row * H + i]! - mean) ** 2;
          const inverse = 1 / Math.sqrt(variance / H + 1e-5);
          for (let i = 0; i < H; i++) {
            const expected = (x[row * H + i]! - mean) * inverse * gamma[i]! + beta[i]!;
            expect(Math.abs(y[row * H + i]! - expected), `${context.family} H ${H}`).toBeLessThan(2e-6 * (1 + Math.abs(expected)));
          }
        }
        for (const buffer of [xb, gb, bb, yb]) buffer.destroy();
      }
    }
  });

  it('GELU without erf (Numerical Recipes erfcc) is within 1e-6·max(1, |x|) of the exact GELU; the tanh form too', async () => {
    const device = dawn!.device;
    const inputs = Float32Array.from({ length: 4096 }, (_, i) => -12 + (24 * i) / 4095);
    const source = `${GELU_WGSL}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= arrayLength(&x)) { return; }
  y[2u * i] = geluErf(x[i]);
  y[2u * i + 1u] = geluTanh(x[i]);
}`;
    const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: source }), entryPoint: 'main' } });
    const xb = floatBuffer(device, inputs);
    const yb = device.createBuffer({ size: inputs.byteLength * 2, usage: STORAGE() });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: xb } }, { binding: 1, resource: { buffer: yb } }] }));
    pass.dispatchWorkgroups(inputs.length / 64);
    pass.end();
    device.queue.submit([encoder.finish()]);
    const y = new Float32Array(await readBuffer(device, yb, inputs.byteLength * 2));
    let worstErf = 0;
    let worstTanh = 0;
    for (const [i, x] of inputs.entries()) {
      const scale = Math.max(1, Math.abs(x));
      worstErf = Math.max(worstErf, Math.abs(y[2 * i]! - geluErf(x)) / scale);
      worstTanh = Math.max(worstTanh, Math.abs(y[2 * i + 1]! - geluTanh(x)) / scale);
    }
    expect(worstErf).toBeLessThan(1e-6);
    expect(worstTanh).toBeLessThan(1e-6);
    xb.destroy();
    yb.destroy();
  });
});

describe('WebGPU runtime inputs (no adapter needed)', () => {
  const chat = (modelConfig: Record<string, unknown>, top: Record<string, unknown> = {}) => ({
    model_type: 'gpt_neox',
    quantization: 'q4f16_1',
    model_config: {
      hidden_size: 64,
      num_attention_heads: 4,
      num_hidden_layers: 2,
      intermediate_size: 256,
      vocab_size: 384,
      context_window_size: 128,
      rotary_pct: 0.5,
      position_embedding_base: 10000,
      layer_norm_eps: 1e-5,
      use_parallel_residual: true,
      ...modelConfig,
    },
    ...top,
  });

  it('reads mlc-chat-config.json model_config into the forward pass numbers', () => {
    const config = parseChatConfig(chat({}));
    expect(config).toMatchObject({ hiddenSize: 64, headDim: 16, rotaryDims: 8, rotaryBase: 10000, numLayers: 2, vocabSize: 384, contextWindowSize: 128, activation: 'gelu-erf' });
    expect(parseChatConfig(chat({ hidden_act: 'gelu_new' })).activation).toBe('gelu-tanh');
  });

  it('refuses impossible chat configs with CONFIG errors naming the field and value', () => {
    const code = (raw: unknown) => {
      try {
        parseChatConfig(raw, 'x/mlc-chat-config.json');
      } catch (error) {
        expect(error).toBeInstanceOf(PolyquantError);
        return `${(error as PolyquantError).code}: ${(error as PolyquantError).detail}`;
      }
      return 'accepted';
    };
    expect(code([])).toBe('config: the chat config is not a JSON object');
    expect(code(chat({ hidden_size: 65 }))).toBe('config: hidden_size 65 is not divisible by num_attention_heads 4');
    expect(code(chat({ num_hidden_layers: 0 }))).toBe('config: model_config.num_hidden_layers is 0; expected an integer from 1 to 1024');
    expect(code(chat({ rotary_pct: 0.33 }))).toBe('config: rotary dimensions int(16 × 0.33) = 5 is odd; rotate-half rope needs an even count');
    expect(code(chat({ use_parallel_residual: 'yes' }))).toBe('config: model_config.use_parallel_residual is "yes"; expected true or false');
    expect(code(chat({ hidden_act: 'relu' }))).toBe('unsupported: model_config.hidden_act "relu" is not supported');
    expect(code(chat({}, { model_type: 'llama' }))).toBe('unsupported: model_type "llama" is not supported');
    expect(code(chat({}, { quantization: 4 }))).toBe('config: quantization is 4; expected a string such as "q4f16_1"');
  });

  it('fetches files relative to the folder URL, and turns a 404 into NOT_FOUND naming the URL', async () => {
    const requested: string[] = [];
    const fake = (async (url: string) => {
      requested.push(url);
      if (url.endsWith('missing.bin')) return new Response('nope', { status: 404 });
      if (url.endsWith('.json')) return new Response('{"a":1}', { status: 200 });
      return new Response(new Uint8Array([1, 2, 3]), { status: 200 });
    }) as unknown as typeof fetch;
    const source = fetchWeightSource('http://127.0.0.1:8080/model', { fetch: fake });
    expect(await source.readJson('tensor-cache.json')).toEqual({ a: 1 });
    expect(Array.from(await source.readBytes('params_shard_0.bin'))).toEqual([1, 2, 3]);
    const error = await source.readBytes('missing.bin').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PolyquantError);
    expect((error as PolyquantError).code).toBe('not-found');
    expect((error as PolyquantError).message).toContain('http://127.0.0.1:8080/model/missing.bin');
    expect(requested).toEqual(['http://127.0.0.1:8080/model/tensor-cache.json', 'http://127.0.0.1:8080/model/params_shard_0.bin', 'http://127.0.0.1:8080/model/missing.bin']);
  });
});

describe('the runtime stays browser-safe (DESIGN.md import rules)', () => {
  it('imports nothing from Node, npm packages or verify/, transitively from its index', () => {
    const seen = new Set<string>();
    const pending = [resolve(REPO, 'src', 'runtime', 'webgpu', 'index.ts')];
    const outside: string[] = [];
    while (pending.length > 0) {
      const file = pending.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      const source = readFileSync(file, 'utf8');
      for (const match of source.matchAll(/^(?:import|export)[^'"]*from\s+'([^']+)'/gm)) {
        const specifier = match[1]!;
        if (!specifier.startsWith('.')) {
          outside.push(`${file}: ${specifier}`);
          continue;
        }
        const target = resolve(dirname(file), specifier.replace(/\.js$/, '.ts'));
        if (target.includes(`${sep}verify${sep}`) || target.includes(`${sep}cli${sep}`)) outside.push(`${file}: ${specifier}`);
        pending.push(target);
      }
    }
    expect(outside).toEqual([]);
    expect(seen.size).toBeGreaterThan(5);
  });
});
