/**
 * `convert --to gguf --calibrate TEXT --optimize`: GPTQ for the GGUF K-quants and legacy quants, through
 * the converter (library) and the CLI, on the bundled tiny GPT-NeoX — whose 64-column rows take q4_k_m's
 * fallbacks Q5_0 and Q8_0 and whose 256-column ffn_down takes Q4_K/Q6_K — and, with ../shared, on
 * polyglot-ko-tiny, where the optimised file must measure better than the imatrix one.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeHessians, type HessianResult, hessianImatrix } from '../src/calibrate/hessian.js';
import { importanceOf } from '../src/calibrate/imatrix.js';
import { convertToGguf, type GgufConversionPlan, OPTIMIZE_KV } from '../src/converters/gguf/convert.js';
import { readGgufHeader } from '../src/converters/gguf/format.js';
import { ERROR_CODES } from '../src/errors.js';
import { verify } from '../src/verify/verify.js';
import { runCli } from './helpers/cli.js';
import { expectPolyquantError } from './helpers/errors.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-optimize-');
afterAll(() => scratch.remove());
const TINY_NEOX = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const TEXT = `${Array.from({ length: 60 }, (_, i) => `문장 ${i}: 한국어 모델을 양자화합니다. The quick brown fox ${i * 7}.`).join('\n')}\n`;

async function header(path: string) {
  const bytes = readFileSync(path);
  return { bytes, header: await readGgufHeader(path, bytes.length, async (n) => bytes.subarray(0, n)) };
}

/** The tensor data section, which --optimize changes only in its levels. */
function tensorData(bytes: Uint8Array, dataStart: number): Uint8Array {
  return bytes.subarray(dataStart);
}

describe('GGUF --optimize on the bundled tiny GPT-NeoX', () => {
  let text: string;
  let calibration: HessianResult;
  let imatrix: Map<string, Float32Array>;
  let rtn: { plan: GgufConversionPlan; path: string };

  beforeAll(async () => {
    text = join(scratch.path, 'calibration.txt');
    writeFileSync(text, TEXT);
    calibration = await computeHessians(TINY_NEOX, { texts: [text], ctx: 32, chunks: 6, threads: 1, head: true });
    imatrix = importanceOf({ entries: hessianImatrix(calibration) });
    const path = join(scratch.path, 'imatrix.gguf');
    rtn = { plan: await convertToGguf(TINY_NEOX, { type: 'q4_k_m', imatrix, out: path, workers: 0 }), path };
  });

  const optimize = (name: string, hessians: HessianResult['entries'], extra: { workers?: number; dampening?: number } = {}) =>
    convertToGguf(TINY_NEOX, { type: 'q4_k_m', imatrix, hessians, out: join(scratch.path, name), workers: 0, ...extra });

  it('quantizes every weight that has a Hessian with GPTQ, in the same types and bytes per tensor as the imatrix file, and records it', async () => {
    const plan = await optimize('gptq.gguf', calibration.entries);
    const gptq = plan.tensors.filter((tensor) => tensor.gptq);
    expect(gptq.map((tensor) => tensor.source).sort()).toEqual([...calibration.entries.keys()].sort());
    expect(new Set(gptq.map((tensor) => tensor.type))).toEqual(new Set(['Q4_K', 'Q6_K', 'Q5_0', 'Q8_0']));
    expect(plan.tensors.map(({ name, type, bytes }) => ({ name, type, bytes }))).toEqual(rtn.plan.tensors.map(({ name, type, bytes }) => ({ name, type, bytes })));
    const written = await header(join(scratch.path, 'gptq.gguf'));
    const reference = await header(rtn.path);
    expect(written.bytes.length - written.header.dataStart).toBe(reference.bytes.length - reference.header.dataStart);
    expect(written.header.kvs.get(OPTIMIZE_KV)?.value).toBe('gptq');
    expect(written.header.kvs.get(`${OPTIMIZE_KV}.tensors_count`)?.value).toBe(gptq.length);
    expect(reference.header.kvs.has(OPTIMIZE_KV)).toBe(false);
    // Every GPTQ tensor's levels moved; the others (token embedding, norms, biases) are the imatrix file's.
    for (const tensor of plan.tensors) {
      const a = written.bytes.subarray(written.header.dataStart + tensor.offset, written.header.dataStart + tensor.offset + tensor.bytes);
      const b = reference.bytes.subarray(reference.header.dataStart + tensor.offset, reference.header.dataStart + tensor.offset + tensor.bytes);
      expect(Buffer.compare(a, b) !== 0, tensor.name).toBe(tensor.gptq === true);
    }
  });

  it("writes the imatrix file's tensor data byte for byte when the Hessians are diagonal and undamped (nothing to feed back)", async () => {
    const diagonal = new Map(
      [...calibration.entries].map(([name, entry]) => {
        const K = entry.columns;
        const matrix = new Float64Array(K * K);
        for (let i = 0; i < K; i += 1) matrix[i * K + i] = entry.matrix[i * K + i] as number;
        return [name, { ...entry, matrix }];
      }),
    );
    await optimize('diagonal.gguf', diagonal, { dampening: 0 });
    const written = await header(join(scratch.path, 'diagonal.gguf'));
    const reference = await header(rtn.path);
    expect(Buffer.compare(tensorData(written.bytes, written.header.dataStart), tensorData(reference.bytes, reference.header.dataStart))).toBe(0);
  });

  it('writes the same bytes whatever the thread count', async () => {
    await optimize('inline.gguf', calibration.entries);
    await optimize('threads.gguf', calibration.entries, { workers: 2 });
    expect(readFileSync(join(scratch.path, 'threads.gguf')).equals(readFileSync(join(scratch.path, 'inline.gguf')))).toBe(true);
  });

  it('refuses a Hessian of another size, a GGUF input and --dry-run --error', async () => {
    const [name, entry] = [...calibration.entries][0] as [string, HessianResult['entries'] extends ReadonlyMap<string, infer E> ? E : never];
    const wrong = new Map([[name, { ...entry, columns: 3, matrix: new Float64Array(9) }]]);
    await expectPolyquantError(optimize('wrong.gguf', wrong), ERROR_CODES.CONFIG, 'Hessian has 3 columns');
    await expectPolyquantError(convertToGguf(rtn.path, { type: 'q4_k_m', hessians: calibration.entries, out: join(scratch.path, 'gguf-in.gguf') }), ERROR_CODES.USAGE, 'HF model folder');
    await expectPolyquantError(
      convertToGguf(TINY_NEOX, { type: 'q4_k_m', hessians: calibration.entries, dryRun: true, error: true }),
      ERROR_CODES.USAGE,
      'not --optimize',
    );
  });

  it('CLI: --optimize needs --calibrate and --to gguf; with them it writes a file llama.cpp loads and runs', async () => {
    const noText = await runCli('convert', TINY_NEOX, '--type', 'q4_k_m', '--optimize', '--out', join(scratch.path, 'x.gguf'));
    expect(noText.code).toBe(2);
    expect(noText.stderr).toContain('--optimize needs --calibrate TEXT');
    const onnx = await runCli('convert', TINY_NEOX, '--to', 'onnx', '--type', 'q4', '--optimize', '--calibrate', text);
    expect(onnx.code).toBe(2);
    expect(onnx.stderr).toContain('--optimize applies to --to gguf only');

    const out = join(scratch.path, 'cli.gguf');
    const run = await runCli('convert', TINY_NEOX, '--type', 'q4_k_m', '--calibrate', text, '--calibrate-chunks', '3', '--optimize', '--threads', '1', '--out', out);
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/optimize {3}\d+ tensors quantized with GPTQ/);
    const report = await verify({ candidate: out, baseline: TINY_NEOX, pplFiles: [text], ctx: 64, threads: 1 });
    expect(report.candidate.engine).toBe('llamacpp');
    const kld = report.perplexity[0]?.comparison.kld?.mean as number;
    expect(Number.isFinite(kld)).toBe(true);
    expect(kld).toBeLessThan(0.05);
  });
});

describe.skipIf(!HAS_SHARED)('GGUF --optimize on polyglot-ko-tiny', () => {
  // A slice of each text keeps this to seconds; on it the optimised file's mean KLD is ~20 % below the imatrix file's.
  it('measures a lower KLD against the HF model than the imatrix file from the same calibration', async () => {
    const train = join(scratch.path, 'train-slice.txt');
    const valid = join(scratch.path, 'valid-slice.txt');
    writeFileSync(train, readFileSync(sharedPath('data', 'korean-text', 'train.txt'), 'utf8').slice(0, 12_000));
    writeFileSync(valid, readFileSync(sharedPath('data', 'korean-text', 'valid.txt'), 'utf8').slice(0, 3_000));
    const calibration = await computeHessians(POLYGLOT_TINY_DIR, { texts: [train], ctx: 256, threads: 2, head: true });
    const imatrix = importanceOf({ entries: hessianImatrix(calibration) });
    const kld = async (name: string, hessians?: HessianResult['entries']): Promise<number> => {
      const out = join(scratch.path, name);
      await convertToGguf(POLYGLOT_TINY_DIR, { type: 'q4_k_m', imatrix, ...(hessians !== undefined && { hessians }), out, workers: 2 });
      const report = await verify({ candidate: out, baseline: POLYGLOT_TINY_DIR, pplFiles: [valid], ctx: 256, threads: 2 });
      return report.perplexity[0]?.comparison.kld?.mean as number;
    };
    const withImatrix = await kld('polyglot-imatrix.gguf');
    const optimized = await kld('polyglot-optimize.gguf', calibration.entries);
    expect(optimized).toBeLessThan(withImatrix);
  }, 180_000);
});
