import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToOnnx } from '../src/converters/onnx/convert.js';
import type { Engine } from '../src/verify/engine.js';
import { checkOnnxExternalData } from '../src/converters/onnx/read.js';
import { createOnnxEngine, locateOnnxModel, type OnnxEngine } from '../src/verify/engines/onnx.js';
import { createReferenceEngine, type ReferenceEngine } from '../src/verify/engines/reference.js';
import { perplexityOfFile } from '../src/verify/perplexity.js';
import { verify } from '../src/verify/verify.js';
import { runCli } from './helpers/cli.js';
import { expectPolyquantError } from './helpers/errors.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-onnx-engine-');
afterAll(() => scratch.remove());
const TINY_NEOX = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const VALID_TEXT = sharedPath('data', 'korean-text', 'valid.txt');

function sampleText(): string {
  const path = join(scratch.path, 'sample.txt');
  const sentences = ['서울은 한강을 끼고 있는 큰 도시이다. ', '오늘은 날씨가 맑고 바람이 시원하다. ', 'The quick brown fox jumps over the lazy dog. '];
  writeFileSync(path, Array.from({ length: 40 }, (_, i) => sentences[i % 3]).join(''));
  return path;
}

function concat(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

const sum = (values: ArrayLike<number>): number => Array.from(values).reduce((total, value) => total + value, 0);

/** Each continuation's summed log-likelihood from `score` on context + continuation. */
async function scoredWhole(engine: Engine, context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
  const sums: number[] = [];
  for (const continuation of continuations) {
    sums.push(continuation.length === 0 ? 0 : sum((await engine.score(concat(context, continuation), { from: context.length })).tokenLogProbs));
  }
  return sums;
}

function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i += 1) worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)));
  return worst;
}

describe('the onnx engine on the bundled tiny GPT-NeoX', () => {
  let folder: string;
  /** The same checkpoint's q8 as DynamicQuantizeLinear + MatMulInteger (`--q8-format integer`). */
  let integerFolder: string;
  let fp32: OnnxEngine;
  let reference: ReferenceEngine;
  let tokens: Int32Array;

  beforeAll(async () => {
    folder = join(scratch.path, 'tiny-onnx');
    await convertToOnnx(TINY_NEOX, { types: ['fp32', 'q8', 'q4'], out: folder, workers: 0 });
    integerFolder = join(scratch.path, 'tiny-onnx-q8-integer');
    await convertToOnnx(TINY_NEOX, { types: ['q8'], out: integerFolder, workers: 0, q8Format: 'integer' });
    fp32 = await createOnnxEngine(folder, { onnxType: 'fp32', device: 'cpu', threads: 1 });
    reference = await createReferenceEngine(TINY_NEOX, { threads: 1 });
    tokens = fp32.tokenize(readFileSync(sampleText(), 'utf8')).slice(0, 100);
  });
  afterAll(async () => {
    await fp32?.close();
    await reference?.close();
  });

  it('describes the graph it runs: file, type, CPU, float32 cache, vocabulary and context from config.json', () => {
    expect(fp32.name).toBe('onnx');
    expect(fp32.path).toBe(join(folder, 'onnx', 'model.onnx'));
    expect(fp32.onnxType).toBe('fp32');
    expect(fp32.device).toBe('cpu');
    expect(fp32.executionProvider).toBe('cpu');
    expect(fp32.gpu).toBeUndefined();
    expect(fp32.cacheType).toBe('float32');
    expect(fp32.vocabSize).toBe(reference.vocabSize);
    expect(fp32.contextLength).toBe(128);
    expect(fp32.trainContextLength).toBe(128);
    expect(fp32.reusesCache).toBe(true);
  });

  it('tokenizes as the HF folder does', () => {
    const text = readFileSync(sampleText(), 'utf8');
    expect(fp32.tokenize(text)).toEqual(reference.tokenize(text));
  });

  it('gives the reference engine’s logits and log-probabilities (fp32) within 1e-4', async () => {
    const logits = await fp32.logits(tokens);
    expect(maxAbsDifference(logits, await reference.logits(tokens))).toBeLessThan(1e-4);
    const ours = await fp32.score(tokens, { from: 5, distributions: 'topk', topK: 8 });
    const theirs = await reference.score(tokens, { from: 5, distributions: 'topk', topK: 8 });
    expect(maxAbsDifference(ours.tokenLogProbs, theirs.tokenLogProbs)).toBeLessThan(1e-4);
    expect(ours.argmax).toEqual(theirs.argmax);
    expect(ours.topk?.ids.slice(0, 4)).toEqual(theirs.topk?.ids.slice(0, 4));
    expect(maxAbsDifference(ours.topk?.logProbs ?? [], theirs.topk?.logProbs ?? [])).toBeLessThan(1e-4);
    expect(maxAbsDifference(ours.topk?.restLogMass ?? [], theirs.topk?.restLogMass ?? [])).toBeLessThan(1e-4);
  });

  it('returns full log-softmax rows whose entries are the targets’ log-probabilities, written into a given buffer', async () => {
    const from = 10;
    const scored = tokens.length - from;
    const vocab = fp32.vocabSize;
    const into = new Float32Array(scored * vocab + 7).fill(Number.NaN);
    const result = await fp32.score(tokens, { from, distributions: 'full', into });
    const full = result.full as Float32Array;
    expect(full.buffer).toBe(into.buffer);
    expect(full).toHaveLength(scored * vocab);
    for (let index = 0; index < scored; index += 1) {
      const row = full.subarray(index * vocab, (index + 1) * vocab);
      let mass = 0;
      let best = 0;
      for (let id = 0; id < vocab; id += 1) {
        mass += Math.exp(row[id] as number);
        if ((row[id] as number) > (row[best] as number)) best = id;
      }
      expect(Math.abs(mass - 1)).toBeLessThan(1e-5);
      expect(result.argmax[index]).toBe(best);
      expect(Math.abs((row[tokens[from + index] as number] as number) - (result.tokenLogProbs[index] as number))).toBeLessThan(1e-6);
    }
    const none = await fp32.score(tokens, { from });
    expect(none.full).toBeUndefined();
    expect(none.tokenLogProbs).toEqual(result.tokenLogProbs);
  });

  it.each([
    ['fp32', true],
    ['q4', true],
    ['q8', true],
    ['q8 MatMulInteger', false],
  ] as const)('scores %s continuations on the context (cache reused: %s) with the numbers of score on context + continuation', async (name, reuses) => {
    const integer = name === 'q8 MatMulInteger';
    const engine = await createOnnxEngine(integer ? integerFolder : folder, { onnxType: integer ? 'q8' : name, device: 'cpu', threads: 1 });
    try {
      expect(engine.reusesCache).toBe(reuses);
      const context = tokens.slice(0, 30);
      const continuations = [tokens.slice(30, 34), tokens.slice(30, 31), new Int32Array(0), tokens.slice(50, 90)];
      const sums = await engine.scoreContinuations(context, continuations);
      const whole = await scoredWhole(engine, context, continuations);
      expect(sums[2]).toBe(0);
      expect(maxAbsDifference(sums, whole)).toBeLessThanOrEqual(1e-6 * Math.max(...whole.map(Math.abs)));
    } finally {
      await engine.close();
    }
  });

  it('refuses a folder holding several models when no type is chosen, listing them', async () => {
    const error = await expectPolyquantError(createOnnxEngine(folder), 'usage', '3 models', 'onnx/model.onnx (fp32)', 'onnx/model_q4.onnx (q4)', 'onnx/model_quantized.onnx (q8)');
    expect(error.hint).toContain('--onnx-type');
    await expectPolyquantError(createOnnxEngine(folder, { onnxType: 'q4f16' }), 'not-found', 'onnx/model_q4f16.onnx');
  });

  it('takes the only model of a folder that holds one', async () => {
    const single = scratch.fresh();
    mkdirSync(join(single, 'onnx'));
    for (const name of ['config.json', 'tokenizer.json']) copyFileSync(join(folder, name), join(single, name));
    for (const name of ['model_q4.onnx', 'model_q4.onnx_data']) copyFileSync(join(folder, 'onnx', name), join(single, 'onnx', name));
    const location = await locateOnnxModel(single);
    expect(location.file).toBe(join(single, 'onnx', 'model_q4.onnx'));
    expect(location.type).toBe('q4');
  });

  it('runs a .onnx file with the tokenizer and config of the folder above it, and refuses a type for a file', async () => {
    const file = join(folder, 'onnx', 'model_q4.onnx');
    const engine = await createOnnxEngine(file, { device: 'cpu', threads: 1 });
    try {
      expect(engine.onnxType).toBe('q4');
      expect(engine.contextLength).toBe(128);
      expect(engine.tokenize('서울')).toEqual(reference.tokenize('서울'));
    } finally {
      await engine.close();
    }
    await expectPolyquantError(createOnnxEngine(file, { onnxType: 'q4' }), 'usage', 'already a .onnx file');
  });

  it('names a missing external data file before onnxruntime sees the graph', async () => {
    const broken = scratch.fresh();
    mkdirSync(join(broken, 'onnx'));
    for (const name of ['config.json', 'tokenizer.json']) copyFileSync(join(folder, name), join(broken, name));
    copyFileSync(join(folder, 'onnx', 'model_q4.onnx'), join(broken, 'onnx', 'model_q4.onnx'));
    const error = await expectPolyquantError(createOnnxEngine(broken), 'not-found', 'model_q4.onnx_data', 'does not exist');
    expect(error.file).toBe(join(broken, 'onnx', 'model_q4.onnx_data'));
    await expectPolyquantError(checkOnnxExternalData(join(broken, 'onnx', 'model_q4.onnx')), 'not-found', 'model_q4.onnx_data');
    // A truncated data file is named too.
    writeFileSync(join(broken, 'onnx', 'model_q4.onnx_data'), new Uint8Array(16));
    const truncated = await expectPolyquantError(createOnnxEngine(broken), 'malformed', 'model_q4.onnx_data', 'runs past the end');
    expect(truncated.hint).toContain('truncated');
  });

  it('lists the external data of a graph with its offsets and lengths', async () => {
    const summary = await checkOnnxExternalData(join(folder, 'onnx', 'model.onnx'));
    expect(summary.dataFiles.map((file) => file.path)).toEqual([join(folder, 'onnx', 'model.onnx_data')]);
    const external = summary.initializers.flatMap((tensor) => (tensor.storage === 'inline' ? [] : [tensor.storage]));
    expect(external.length).toBeGreaterThan(0);
    for (const range of external) expect(range.length).toBeGreaterThan(0);
  });

  it('refuses bad windows, token ids outside the vocabulary and use after close', async () => {
    await expectPolyquantError(fp32.score(new Int32Array(129)), 'usage', 'more than the context length 128');
    await expectPolyquantError(fp32.score(Int32Array.of(1, 2, fp32.vocabSize)), 'usage', `token id ${fp32.vocabSize}`);
    await expectPolyquantError(fp32.score(Int32Array.of(1, 2, 3), { from: 0 }), 'usage', 'from is 0');
    await expectPolyquantError(fp32.scoreContinuations(new Int32Array(0), [Int32Array.of(1)]), 'usage', 'context is empty');
    expect((await fp32.score(Int32Array.of(5))).tokenLogProbs).toHaveLength(0);
    const engine = await createOnnxEngine(folder, { onnxType: 'q4', device: 'cpu', threads: 1 });
    await engine.close();
    await expectPolyquantError(engine.score(tokens), 'usage', 'closed');
  });

  it('runs device gpu on CUDA or WebGPU, or fails naming both; auto falls back to the CPU', async () => {
    const gpu = await createOnnxEngine(folder, { onnxType: 'q4', device: 'gpu' }).catch((error: unknown) => error);
    if (gpu instanceof Error) {
      await expectPolyquantError(Promise.reject(gpu), 'unsupported', 'the onnx engine found no usable GPU');
    } else {
      const engine = gpu as OnnxEngine;
      expect(engine.device).toBe('gpu');
      expect(['cuda', 'webgpu']).toContain(engine.gpu);
      await engine.close();
    }
    const auto = await createOnnxEngine(folder, { onnxType: 'q4', device: 'auto', threads: 1 });
    expect(auto.device).toBe(auto.executionProvider === 'cpu' ? 'cpu' : 'gpu');
    await auto.close();
    await expectPolyquantError(createOnnxEngine(folder, { onnxType: 'q4', device: 'tpu' as 'cpu' }), 'usage', 'device');
    await expectPolyquantError(createOnnxEngine(folder, { onnxType: 'q4', threads: 0 }), 'usage', 'threads is 0');
  });

  it('verifies an ONNX folder against its HF folder: the chosen type runs, KL divergence from full rows in JS', async () => {
    const report = await verify({
      candidate: folder,
      onnxType: 'q4',
      baseline: TINY_NEOX,
      pplFiles: [sampleText()],
      ctx: 64,
      device: 'cpu',
      threads: 1,
    });
    expect(report.candidate).toMatchObject({ engine: 'onnx', device: 'cpu', path: join(folder, 'onnx', 'model_q4.onnx') });
    expect(report.baseline.engine).toBe('reference');
    const [section] = report.perplexity;
    expect(section?.candidate.non_finite_positions).toBe(0);
    expect(section?.comparison.kld?.mean).toBeGreaterThan(0);
    expect(section?.comparison.kld?.mean).toBeLessThan(0.5);
    // fp32 against the reference: the same model, so nothing to measure but rounding.
    const same = await verify({ candidate: join(folder, 'onnx', 'model.onnx'), baseline: TINY_NEOX, pplFiles: [sampleText()], ctx: 64, threads: 1 });
    expect(Math.abs(same.perplexity[0]?.comparison.delta_ppl_pct ?? 1)).toBeLessThan(1e-3);
    expect(same.perplexity[0]?.comparison.kld?.max).toBeLessThan(1e-6);
    expect(same.perplexity[0]?.comparison.top1_agreement).toBe(1);
  });

  it('runs `verify --onnx-type` from the command line (any case), exits 2 for an ambiguous folder, and never writes a report over a data file', async () => {
    const text = sampleText();
    const json = join(scratch.path, 'onnx-q4.json');
    const run = await runCli('verify', folder, '--onnx-type', 'Q4', '--baseline', TINY_NEOX, '--ppl', text, '--ctx', '64', '--device', 'cpu', '--threads', '1', '--json', json);
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(0);
    expect(JSON.parse(readFileSync(json, 'utf8')).candidate).toMatchObject({ engine: 'onnx', path: join(folder, 'onnx', 'model_q4.onnx') });
    const ambiguous = await runCli('verify', folder, '--baseline', TINY_NEOX, '--ppl', text, '--ctx', '64');
    expect(ambiguous.code).toBe(2);
    expect(ambiguous.stderr).toContain('--onnx-type');
    const overwrite = await runCli('verify', folder, '--onnx-type', 'q4', '--baseline', TINY_NEOX, '--ppl', text, '--json', join(folder, 'onnx', 'model_q4.onnx_data'));
    expect(overwrite.code).toBe(2);
    expect(overwrite.stderr).toContain('would overwrite');
  });

  it('refuses ambiguous ONNX folders, the onnx engine on an HF folder and --onnx-type without an ONNX model, before loading', async () => {
    const text = sampleText();
    await expectPolyquantError(verify({ candidate: folder, baseline: TINY_NEOX, pplFiles: [text] }), 'usage', '3 models');
    await expectPolyquantError(verify({ candidate: TINY_NEOX, baseline: TINY_NEOX, pplFiles: [text], engine: 'onnx' }), 'usage', 'the onnx engine runs ONNX folders');
    await expectPolyquantError(verify({ candidate: TINY_NEOX, baseline: TINY_NEOX, pplFiles: [text], onnxType: 'q4' }), 'usage', '--onnx-type');
    await expectPolyquantError(verify({ candidate: folder, baseline: TINY_NEOX, pplFiles: [text], onnxType: 'q4', simulate: 'Q4_0' }), 'usage', '--simulate');
  });
});

describe.skipIf(!HAS_SHARED)('the onnx engine on polyglot-ko-tiny', () => {
  const referenceJson = HAS_SHARED
    ? (JSON.parse(readFileSync(join(POLYGLOT_TINY_DIR, 'reference', 'reference.json'), 'utf8')) as {
        sequences: { token_ids: number[]; logits_file: string; shape: [number, number] }[];
      })
    : { sequences: [] };
  let folder: string;
  let engine: OnnxEngine;

  beforeAll(async () => {
    folder = join(scratch.path, 'polyglot-ko-tiny-onnx');
    await convertToOnnx(POLYGLOT_TINY_DIR, { types: ['fp32'], out: folder });
    engine = await createOnnxEngine(folder, { device: 'cpu' });
  });
  afterAll(async () => engine?.close());

  it.each(referenceJson.sequences.map((sequence, index) => [index, sequence] as const))(
    'reproduces the PyTorch logits of reference sequence %i within 1e-4 (fp32)',
    async (_index, sequence) => {
      const bytes = readFileSync(join(POLYGLOT_TINY_DIR, 'reference', sequence.logits_file));
      const expected = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
      const logits = await engine.logits(Int32Array.from(sequence.token_ids));
      expect(logits).toHaveLength(sequence.shape[0] * sequence.shape[1]);
      const worst = maxAbsDifference(logits, expected);
      console.log(`${sequence.logits_file}: max |Δ logit| = ${worst.toExponential(2)}`);
      expect(worst).toBeLessThanOrEqual(1e-4);
    },
  );

  it('gives the reference engine’s perplexity on valid.txt within 1e-5 relative (fp32, ctx 512, 3 windows)', { timeout: 300_000 }, async () => {
    const reference = await createReferenceEngine(POLYGLOT_TINY_DIR, { threads: 2 });
    try {
      const started = performance.now();
      const ours = await perplexityOfFile(engine, VALID_TEXT, { ctx: 512, maxWindows: 3 });
      const seconds = (performance.now() - started) / 1000;
      const theirs = await perplexityOfFile(reference, VALID_TEXT, { ctx: 512, maxWindows: 3 });
      console.log(`onnx fp32 ppl ${ours.ppl} (reference ${theirs.ppl}), 3 windows of 512 in ${seconds.toFixed(1)} s`);
      expect(ours.scoredTokens).toBe(theirs.scoredTokens);
      expect(Math.abs(ours.ppl / theirs.ppl - 1)).toBeLessThan(1e-5);
    } finally {
      await reference.close();
    }
  });

  it('runs KOBEST through scoreContinuations: the fp32 graph makes the same predictions as the HF folder', async () => {
    const report = await verify({
      candidate: folder,
      baseline: POLYGLOT_TINY_DIR,
      kobestDir: sharedPath('data', 'kobest'),
      tasks: ['copa'],
      split: 'validation',
      limit: 12,
      device: 'cpu',
    });
    expect(report.candidate.engine).toBe('onnx');
    expect(report.kobest[0]?.baseline.n).toBe(12);
    expect(report.kobest[0]?.comparison.flips).toBe(0);
    expect(report.kobest[0]?.candidate.acc).toBe(report.kobest[0]?.baseline.acc);
  });

  it('scores continuations on the cached context with the numbers of score', async () => {
    const tokens = Int32Array.from(referenceJson.sequences[0]?.token_ids ?? []);
    const context = tokens.slice(0, 12);
    const continuations = [tokens.slice(12, 20), tokens.slice(12, 13), tokens.slice(20, 32)];
    const sums = await engine.scoreContinuations(context, continuations);
    const whole = await scoredWhole(engine, context, continuations);
    expect(maxAbsDifference(sums, whole)).toBeLessThanOrEqual(1e-6 * Math.max(...whole.map(Math.abs)));
  });
});
