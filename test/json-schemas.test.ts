/**
 * Every JSON report has one naming convention and says what it is (issue #15 item 5): `verify --json`,
 * `convert --json` (GGUF, ONNX, WebGPU), `inspect --json` (HF folder, GGUF, ONNX, WebGPU), `demo --json`
 * and a sweep's sweep.json are snake_case all the way down — except map keys that are data (tensor
 * names, GGUF keys, type names, lm-eval metric keys) — carry a versioned `schema` documented in
 * docs/schemas.md, and a `provenance` block naming polyquant's own version, Node, the command line and the
 * engines that ran.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { snakeCaseKey, toJsonShape } from '../src/io/json-shape.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';
import { sampleTextContent } from './helpers/sweep.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir();
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const OWN_VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const SCHEMAS_DOC = readFileSync(join(REPO_ROOT, 'docs', 'schemas.md'), 'utf8');

/** Object fields whose keys are data (dtype and type names, formats, hash states), not field names: their values are still checked. */
const DATA_MAPS = new Set(['bytes_by_dtype', 'types', 'recommendation_by_format', 'md5', 'sha256']);
/** Fields copied from other programs as they were (GGUF / ONNX / MLC metadata, mlc-chat-config's model_config) or in another tool's format (lm-eval's block). */
const FOREIGN = new Set(['metadata', 'model_config', 'results', 'configs', 'versions', 'n-shot', 'higher_is_better', 'n-samples']);
const SNAKE = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$/;

/** Paths of keys that are not snake_case, outside data maps and foreign fields. */
function nonSnakeKeys(value: unknown, path = '$', dataMap = false): string[] {
  if (Array.isArray(value)) return value.flatMap((item) => nonSnakeKeys(item, `${path}[]`));
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([key, item]) => {
    if (FOREIGN.has(key)) return [];
    const bad = !dataMap && !SNAKE.test(key) ? [`${path}.${key}`] : [];
    return [...bad, ...nonSnakeKeys(item, `${path}.${dataMap ? '*' : key}`, DATA_MAPS.has(key))];
  });
}

const outputs = new Map<string, Record<string, unknown>>();
const text = join(scratch.path, 'sample.txt');

async function jsonOf(name: string, argv: string[], file?: string): Promise<void> {
  const run = await runCli(...argv);
  expect([name, run.code, run.stderr]).toEqual([name, expect.any(Number), expect.any(String)]);
  expect(run.stderr).not.toContain('internal error');
  outputs.set(name, JSON.parse(file === undefined ? run.stdout : readFileSync(file, 'utf8')) as Record<string, unknown>);
}

beforeAll(async () => {
  writeFileSync(text, sampleTextContent());
  const dir = scratch.path;
  await jsonOf('convert gguf', ['convert', TINY, '--type', 'q8_0', '--out', join(dir, 'q8_0.gguf'), '--workers', '1', '--json']);
  await jsonOf('convert onnx', ['convert', TINY, '--to', 'onnx', '--type', 'q4', '--out', join(dir, 'onnx'), '--workers', '1', '--json']);
  await jsonOf('convert webgpu', ['convert', TINY, '--to', 'webgpu', '--type', 'q4f16_1', '--out', join(dir, 'webgpu'), '--workers', '1', '--json']);
  await jsonOf('inspect hf', ['inspect', TINY, '--json']);
  await jsonOf('inspect gguf', ['inspect', join(dir, 'q8_0.gguf'), '--json']);
  await jsonOf('inspect onnx', ['inspect', join(dir, 'onnx'), '--json']);
  await jsonOf('inspect webgpu', ['inspect', join(dir, 'webgpu'), '--json']);
  const verifyJson = join(dir, 'verify.json');
  await jsonOf('verify', ['verify', join(dir, 'q8_0.gguf'), '--baseline', TINY, '--ppl', text, '--ctx', '64', '--max-windows', '2', '--threads', '1', '--max-kld', '0.5', '--json', verifyJson], verifyJson);
  const demoJson = join(dir, 'demo.json');
  await jsonOf('demo', ['demo', '--model', TINY, '--types', 'q8_0', '--onnx-types', 'none', '--threads', '1', '--json', demoJson], demoJson);
  const sweep = join(dir, 'sweep');
  await jsonOf('sweep', ['sweep', TINY, '--out', sweep, '--types', 'q8_0', '--ppl', text, '--ctx', '64', '--max-windows', '2', '--threads', '1', '--cache-dir', join(dir, 'cache')], join(sweep, 'sweep.json'));
}, 300_000);

describe('JSON reports', () => {
  it('maps camelCase identifier keys to snake_case and leaves data keys alone', () => {
    expect(snakeCaseKey('bitsPerWeight')).toBe('bits_per_weight');
    expect(snakeCaseKey('kldP99')).toBe('kld_p99');
    for (const data of ['Q4_K', 'general.architecture', 'acc,none', 'n-shot', 'gpt_neox.layers.0.mlp.dense_h_to_4h.weight']) expect(snakeCaseKey(data)).toBe(data);
    expect(toJsonShape({ fileBytes: 3n, metadata: { ParamSize: 1, someKey: 2 }, rows: [{ deltaPplPct: 1 }], bytesByDtype: { F16: 2 } })).toEqual({
      file_bytes: '3',
      metadata: { ParamSize: 1, someKey: 2 },
      rows: [{ delta_ppl_pct: 1 }],
      bytes_by_dtype: { F16: 2 },
    });
  });

  it.each([
    ['verify', 'polyquant.verify/2'],
    ['convert gguf', 'polyquant.convert/1'],
    ['convert onnx', 'polyquant.convert/1'],
    ['convert webgpu', 'polyquant.convert/1'],
    ['inspect hf', 'polyquant.inspect/2'],
    ['inspect gguf', 'polyquant.inspect-gguf/2'],
    ['inspect onnx', 'polyquant.inspect-onnx/2'],
    ['inspect webgpu', 'polyquant.inspect-webgpu/2'],
    ['demo', 'polyquant.demo/2'],
    ['sweep', 'polyquant.sweep/2'],
  ])('%s: snake_case keys, schema %s (documented), provenance with our own version', (name, schema) => {
    const report = outputs.get(name);
    expect(report, name).toBeDefined();
    expect(report?.['schema']).toBe(schema);
    expect(SCHEMAS_DOC).toContain(`\`${schema}\``);
    expect(nonSnakeKeys(report)).toEqual([]);
    const provenance = report?.['provenance'] as Record<string, unknown>;
    expect(provenance).toMatchObject({ polyquant: OWN_VERSION, node: process.version });
    if (name !== 'sweep') expect((provenance['command_line'] as string[]).slice(0, 2)).toEqual(['polyquant', name.split(' ')[0]]);
  });

  it('names the engines, their versions and the llama.cpp build, the threads and the stage times in a verify report', () => {
    const report = outputs.get('verify') as {
      provenance: { engines: Record<string, Record<string, unknown>>; stages: { stage: string; seconds: number; tokens_per_s?: number }[]; command_line: string[]; duration_s: number };
      candidate: { engine: string; threads: number };
      baseline: { engine: string; threads: number };
    };
    const nodeLlamaCpp = JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')) as { version: string };
    expect(report.provenance.engines['node_llama_cpp']).toMatchObject({ version: nodeLlamaCpp.version, llama_cpp_commit: expect.stringMatching(/^[0-9a-f]{40}$/) });
    expect(report.provenance.engines['reference']).toEqual({ version: OWN_VERSION });
    expect([report.candidate.engine, report.candidate.threads, report.baseline.engine, report.baseline.threads]).toEqual(['llamacpp', 1, 'reference', 1]);
    expect(report.provenance.stages.map((stage) => stage.stage)).toEqual(['load', 'load', 'perplexity']);
    expect(report.provenance.stages[2]?.tokens_per_s).toBeGreaterThan(0);
    expect(report.provenance.command_line).toContain('--max-kld');
    expect(report.provenance.duration_s).toBeGreaterThan(0);
  });
});
