/**
 * The webgpu engine's speed: verify-style scoring (full next-token distributions at every scored position)
 * next to the reference engine on the same token windows, in one run, and the matmul-dequant kernels'
 * GFLOP/s per layout for one token (decode) and for a block of tokens (prefill). On a machine without a
 * GPU the adapter is SwiftShader (a software adapter), which this prints.
 *
 *   npx tsx bench/webgpu-engine.ts [--model DIR] [--types q0f32,q4f16_1] [--text FILE] [--ctx 128]
 *                                  [--windows 2] [--device auto|cpu|gpu] [--threads 1]
 *
 * Without --model it uses ../shared's polyglot-ko-tiny (the bundled tiny-neox without ../shared),
 * converted to each type in a temp folder first. Each engine is warmed up with one untimed window; the
 * rate is scored tokens over the wall time of the timed windows.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { convertToWebGpu } from '../src/converters/webgpu/convert.js';
import { quantizeWebGpu, WEBGPU_LAYOUTS, type WebGpuLayoutName } from '../src/quant/webgpu-layouts.js';
import { GpuContext, Recorder } from '../src/runtime/webgpu/gpu.js';
import { matmulSource, recordMatmul } from '../src/runtime/webgpu/ops.js';
import { createMatrix, destroyMatrix } from '../src/runtime/webgpu/weights.js';
import type { Engine } from '../src/verify/engine.js';
import { createReferenceEngine } from '../src/verify/engines/reference.js';
import { createWebGpuEngine } from '../src/verify/engines/webgpu.js';
import { openDawnDevice, type WebGpuDeviceChoice } from '../src/verify/engines/webgpu-dawn.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const root = resolve(import.meta.dirname, '..');
const shared = resolve(root, '..', 'shared');
const polyglot = join(shared, 'fixtures', 'polyglot-ko-tiny');
const model = resolve(argument('model', existsSync(polyglot) ? polyglot : join(root, 'fixtures', 'tiny-neox')));
const text = argument('text', join(shared, 'data', 'korean-text', 'valid.txt'));
const types = argument('types', 'q0f32,q4f16_1').split(',') as WebGpuLayoutName[];
const ctx = Number(argument('ctx', '128'));
const windows = Number(argument('windows', '2'));
const device = argument('device', 'auto') as WebGpuDeviceChoice;
const threads = Number(argument('threads', '1'));

console.log(`${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, load ${loadavg()[0]?.toFixed(2)}, ${new Date().toISOString()}`);
console.log(`${model}: ctx ${ctx}, ${windows} timed windows, full distributions; reference engine with ${threads} thread(s)`);

const scratch = mkdtempSync(join(tmpdir(), 'polyquant-bench-webgpu-'));
try {
  await convertToWebGpu(model, { types, out: scratch });
  const folder = (type: string) => (types.length > 1 ? join(scratch, type) : scratch);

  async function measure(label: string, open: () => Promise<Engine>): Promise<void> {
    const started = performance.now();
    const engine = await open();
    const ready = (performance.now() - started) / 1000;
    try {
      const tokens = engine.tokenize(existsSync(text) ? readFileSync(text, 'utf8') : 'hello world. '.repeat(400));
      const into = new Float32Array((ctx - 1) * engine.vocabSize);
      await engine.score(tokens.subarray(0, ctx), { distributions: 'full', into });
      const begin = performance.now();
      let scored = 0;
      for (let window = 1; window <= windows; window++) {
        const result = await engine.score(tokens.subarray(window * ctx, (window + 1) * ctx), { distributions: 'full', into });
        scored += result.tokenLogProbs.length;
      }
      const seconds = (performance.now() - begin) / 1000;
      const note = (engine as Partial<{ adapter: string }>).adapter;
      console.log(`${label.padEnd(24)} ready ${ready.toFixed(1).padStart(5)} s   ${(scored / seconds).toFixed(1).padStart(8)} tokens/s${note === undefined ? '' : `   (${note})`}`);
    } finally {
      await engine.close();
    }
  }

  console.log('\nscoring (tokens/s)');
  await measure(`reference`, () => createReferenceEngine(model, { threads }));
  for (const type of types) await measure(`webgpu ${type}`, () => createWebGpuEngine(folder(type), { device, contextLength: ctx }));

  // Kernels: the output head's shape of the model (the largest matmul) and its MLP up-projection.
  const config = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8')) as { hidden_size: number; intermediate_size: number; vocab_size: number };
  const dawn = await openDawnDevice({ device });
  try {
    const context = new GpuContext(dawn.device, {}, dawn.adapterInfo);
    console.log(`\nmatmul-dequant kernels (GFLOP/s) on ${dawn.description}, ${context.family} kernels`);
    const shapes = [
      { name: 'head', N: config.vocab_size, K: config.hidden_size },
      { name: 'mlp up', N: config.intermediate_size, K: config.hidden_size },
    ];
    console.log(`${'layout'.padEnd(10)} ${shapes.map((shape) => `${`${shape.name} ${shape.N}×${shape.K}`.padEnd(20)}`).join(' ')}`);
    console.log(`${''.padEnd(10)} ${shapes.map(() => `${'T=1'.padStart(9)} ${'T=64'.padStart(9)} `).join(' ')}`);
    for (const layout of ['q0f32', 'q0f16', 'q4f16_1', 'q4f32_1', 'q8f16_pq', 'q8f32_pq'] as const) {
      const row = WEBGPU_LAYOUTS[layout];
      const format = row.kind === 'no-quant' ? (row.modelDType === 'float16' ? 'f16' : 'f32') : row.bits === 4 ? 'q4' : 'q8';
      const scale = row.scaleDType === null ? undefined : row.scaleDType === 'float16' ? 'f16' : 'f32';
      const cells: string[] = [];
      for (const { N, K } of shapes) {
        const values = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i * 0.61) * 0.05);
        const tensor = quantizeWebGpu(layout, values, N, K);
        const matrix =
          tensor.kind === 'no-quant'
            ? createMatrix(context, { name: 'w', format, N, K }, tensor.weight)
            : createMatrix(context, { name: 'w', format, scale, N, K }, tensor.qWeight, tensor.qScale);
        for (const T of [1, 64]) {
          const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
          const x = dawn.device.createBuffer({ size: T * K * 4, usage });
          const y = dawn.device.createBuffer({ size: T * N * 4, usage });
          await context.pipeline(matmulSource(context, matrix, { T }));
          const run = async () => {
            const recorder = new Recorder(context);
            recordMatmul(recorder, context, matrix, { x, y, T });
            dawn.device.queue.submit([recorder.finish()]);
            await dawn.device.queue.onSubmittedWorkDone();
          };
          await run();
          const repeats = T === 1 ? 10 : 2;
          const begin = performance.now();
          for (let repeat = 0; repeat < repeats; repeat++) await run();
          const seconds = (performance.now() - begin) / 1000 / repeats;
          cells.push(((2 * N * K * T) / seconds / 1e9).toFixed(2).padStart(9));
          x.destroy();
          y.destroy();
        }
        destroyMatrix(matrix);
      }
      console.log(`${layout.padEnd(10)} ${cells.join(' ')}`);
    }
    context.destroy();
  } finally {
    dawn.release();
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
