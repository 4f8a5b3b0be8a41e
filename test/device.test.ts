/**
 * Issue #15 item 11: `--device gpu` with no usable GPU fails (exit 2) in every engine, naming the engine
 * and what was probed, and the report's device is the one that ran; `--device auto` on a machine without
 * any GPU device node takes the short path (no GPU backend loaded). The GPU checks that need a CPU-only
 * machine skip where /dev shows a GPU.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { convertToOnnx } from '../src/converters/onnx/convert.js';
import { convertToWebGpu } from '../src/converters/webgpu/convert.js';
import { GPU_DEVICE_NODES, probeGpuHardware } from '../src/verify/engines/gpu-probe.js';
import { createLlamaCppEngine } from '../src/verify/engines/llamacpp.js';
import { createOnnxEngine } from '../src/verify/engines/onnx.js';
import type { VerifyReport } from '../src/verify/report.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-device-');
afterAll(() => scratch.remove());
const TINY_NEOX = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const CPU_ONLY = !probeGpuHardware().present;

describe('the GPU device-node probe', () => {
  it('finds no GPU in an empty /dev, and names what it looked for', () => {
    const dev = scratch.fresh();
    const probe = probeGpuHardware('linux', dev, {});
    expect(probe).toEqual({ present: false, found: [], summary: `no GPU device node on this machine (looked for ${GPU_DEVICE_NODES})` });
  });

  it('counts NVIDIA nodes, DRM render nodes, ROCm and WSL2 nodes, but not control or display-only nodes', () => {
    const cases: [string[], string[]][] = [
      [['nvidia0'], ['nvidia0']],
      [['nvidiactl', 'nvidia-uvm'], []],
      [['dri/card0'], []],
      [['dri/card0', 'dri/renderD128'], ['dri/renderD128']],
      [['kfd'], ['kfd']],
      [['dxg'], ['dxg']],
    ];
    for (const [nodes, expected] of cases) {
      const dev = scratch.fresh();
      for (const node of nodes) {
        mkdirSync(join(dev, node, '..'), { recursive: true });
        writeFileSync(join(dev, node), '');
      }
      const probe = probeGpuHardware('linux', dev, {});
      expect(probe.found, nodes.join(' ')).toEqual(expected.map((node) => join(dev, node)));
      expect(probe.present).toBe(expected.length > 0);
    }
  });

  it('leaves other platforms and POLYQUANT_GPU_PROBE=backends to the backends', () => {
    const empty = scratch.fresh();
    expect(probeGpuHardware('darwin', empty, {}).present).toBe(true);
    expect(probeGpuHardware('win32', empty, {}).present).toBe(true);
    expect(probeGpuHardware('linux', empty, { POLYQUANT_GPU_PROBE: 'backends' })).toMatchObject({ present: true, summary: expect.stringContaining('backends probe') });
  });

  it('costs next to nothing: a listing of /dev and /dev/dri', () => {
    const started = performance.now();
    for (let index = 0; index < 100; index += 1) probeGpuHardware();
    expect((performance.now() - started) / 100).toBeLessThan(5);
  });
});

describe.skipIf(!CPU_ONLY)('--device on a machine without a GPU', () => {
  let gguf: string;
  let onnx: string;
  let webgpu: string;
  let text: string;
  beforeAll(async () => {
    gguf = join(scratch.path, 'tiny-q8_0.gguf');
    onnx = join(scratch.path, 'tiny-onnx');
    webgpu = join(scratch.path, 'tiny-webgpu');
    await convertToGguf(TINY_NEOX, { type: 'q8_0', out: gguf, workers: 0 });
    await convertToOnnx(TINY_NEOX, { types: ['q4'], out: onnx, workers: 0 });
    await convertToWebGpu(TINY_NEOX, { types: ['q4f16_1'], out: webgpu, workers: 0 });
    text = join(scratch.path, 'text.txt');
    writeFileSync(text, '서울은 한강을 끼고 있는 큰 도시이다. 오늘은 날씨가 맑고 바람이 시원하다. '.repeat(20));
  }, 120_000);
  const saved = process.env['POLYQUANT_GPU_PROBE'];
  afterEach(() => {
    if (saved === undefined) delete process.env['POLYQUANT_GPU_PROBE'];
    else process.env['POLYQUANT_GPU_PROBE'] = saved;
  });

  for (const [engine, candidate] of [
    ['llamacpp', () => gguf],
    ['onnx', () => onnx],
    ['webgpu', () => webgpu],
  ] as const) {
    it(`verify --device gpu exits 2 in the ${engine} engine, naming the engine and the missing device nodes`, async () => {
      const run = await runCli('verify', candidate(), '--baseline', TINY_NEOX, '--ppl', text, '--ctx', '32', '--max-windows', '1', '--device', 'gpu');
      expect(run.code, run.stderr).toBe(2);
      expect(run.stderr).toContain(`--device gpu: the ${engine} engine found no`);
      expect(run.stderr).toContain(`no GPU device node on this machine (looked for ${GPU_DEVICE_NODES})`);
      expect(run.stderr).toContain('--device cpu or auto');
      expect(run.stdout).toBe('');
    });
  }

  it('verify --device auto runs on the CPU and reports cpu for both models', async () => {
    const json = join(scratch.fresh(), 'report.json');
    const run = await runCli('verify', gguf, '--baseline', TINY_NEOX, '--ppl', text, '--ctx', '32', '--max-windows', '1', '--device', 'auto', '--json', json);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    expect(report.candidate).toMatchObject({ engine: 'llamacpp', device: 'cpu' });
    expect(report.baseline).toMatchObject({ engine: 'reference', device: 'cpu' });
  });

  it('--device auto takes the short path in the llamacpp and onnx engines: no GPU backend is probed', async () => {
    const llama = await createLlamaCppEngine(gguf, { device: 'auto', contextLength: 32 });
    try {
      expect(llama.device).toBe('cpu');
      expect(llama.gpu).toBeUndefined();
      expect(llama.deviceProbe).toBe(`--device auto: no GPU device node on this machine (looked for ${GPU_DEVICE_NODES}); CPU`);
    } finally {
      await llama.close();
    }
    const session = await createOnnxEngine(onnx, { device: 'auto', threads: 1 });
    try {
      expect(session.device).toBe('cpu');
      expect(session.executionProvider).toBe('cpu');
      expect(session.deviceProbe).toBe(`--device auto: no GPU device node on this machine (looked for ${GPU_DEVICE_NODES}); CPU`);
    } finally {
      await session.close();
    }
  });

  it("with the device-node look skipped, --device gpu still fails on llama.cpp's CPU build, and auto reports the CPU", async () => {
    process.env['POLYQUANT_GPU_PROBE'] = 'backends';
    const run = await runCli('verify', gguf, '--baseline', TINY_NEOX, '--ppl', text, '--ctx', '32', '--max-windows', '1', '--device', 'gpu');
    // This checkout installs node-llama-cpp's CPU build only (package.json overrides): node-llama-cpp
    // finds no GPU build; with a GPU build and no GPU device it names that build and its empty device list.
    expect(run.code, run.stderr).toBe(2);
    expect(run.stderr).toMatch(/--device gpu: the llamacpp engine found no usable GPU: node-llama-cpp's (CPU build|\w+ build \(GPU devices: none\))/);
    const llama = await createLlamaCppEngine(gguf, { device: 'auto', contextLength: 32 });
    try {
      expect(llama.device).toBe('cpu');
      expect(llama.deviceProbe).toMatch(/^--device auto: no GPU in node-llama-cpp's .*; CPU$/);
    } finally {
      await llama.close();
    }
  });
});
