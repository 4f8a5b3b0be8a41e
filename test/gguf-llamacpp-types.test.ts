/**
 * Every GGUF type our converter writes, from polyglot-ko-tiny: @huggingface/gguf (an independent parser)
 * reads the same header our reader does, and llama.cpp (node-llama-cpp) loads the file and gives finite,
 * normalised next-token distributions close to the f32 file's on a short window.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gguf } from '@huggingface/gguf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { readGgufHeader } from '../src/converters/gguf/format.js';
import { GGML_TYPES } from '../src/quant/ggml-types.js';
import { GGUF_FILE_TYPE_NAMES, GGUF_FILE_TYPES } from '../src/quant/policy.js';
import { readTokenizerFiles, loadTokenizer } from '../src/readers/tokenizer.js';
import { createLlamaCppEngine } from '../src/verify/engines/llamacpp.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-gguf-llamacpp-types-');
afterAll(() => scratch.remove());

/** The types the issue lists; the converter's table must offer exactly these. */
const EXPECTED_TYPES = [
  'f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k_s', 'q3_k_m', 'q3_k_l',
  'q4_k_s', 'q4_k_m', 'q5_k_s', 'q5_k_m', 'q6_k', 'iq4_nl', 'iq4_xs',
];
const WINDOW = 48;

/** Mean negative log-likelihood of the window and the argmax at each position, from the f32 file. */
const f32Result: { meanNll?: number; argmax?: Int32Array } = {};

describe.skipIf(!HAS_SHARED)('every GGUF type from polyglot-ko-tiny parses in @huggingface/gguf and runs in llama.cpp', () => {
  let window: Int32Array;

  beforeAll(async () => {
    const tokenizer = loadTokenizer(await readTokenizerFiles(POLYGLOT_TINY_DIR));
    const text = readFileSync(sharedPath('data', 'korean-text', 'valid.txt'), 'utf8');
    window = tokenizer.encode(text.slice(0, 1000)).slice(0, WINDOW);
    expect(window).toHaveLength(WINDOW);
  });

  it('covers every type the converter offers', () => {
    expect([...GGUF_FILE_TYPE_NAMES].sort()).toEqual([...EXPECTED_TYPES].sort());
  });

  // f32 first: the others are compared with it.
  const ordered = ['f32', ...GGUF_FILE_TYPE_NAMES.filter((type) => type !== 'f32')];
  for (const type of ordered) {
    it(`${type}: the same header through both parsers, loads in llama.cpp, finite normalised log-probabilities`, { timeout: 180_000 }, async () => {
      const out = join(scratch.path, `polyglot-ko-tiny-${type}.gguf`);
      await convertToGguf(POLYGLOT_TINY_DIR, { type, out });

      const bytes = readFileSync(out);
      const ours = await readGgufHeader(out, bytes.length, async (n) => bytes.subarray(0, n));
      const theirs = await gguf(out, { allowLocalFile: true });
      expect(theirs.metadata.version).toBe(ours.version);
      expect(theirs.metadata.tensor_count).toBe(BigInt(ours.tensors.length));
      expect(theirs.metadata.kv_count).toBe(BigInt(ours.kvs.size));
      expect(theirs.metadata['general.architecture']).toBe('gptneox');
      expect((theirs.metadata as Record<string, unknown>)['general.file_type']).toBe(GGUF_FILE_TYPES[type as keyof typeof GGUF_FILE_TYPES].id);
      expect(Number(theirs.tensorDataOffset)).toBe(ours.dataStart);
      expect(theirs.tensorInfos.map((tensor) => tensor.name)).toEqual(ours.tensors.map((tensor) => tensor.name));
      expect(theirs.tensorInfos.map((tensor) => tensor.dtype)).toEqual(ours.tensors.map((tensor) => tensor.typeId));
      expect(theirs.tensorInfos.map((tensor) => tensor.shape.map(Number))).toEqual(ours.tensors.map((tensor) => [...tensor.ne]));
      expect(theirs.tensorInfos.map((tensor) => Number(tensor.offset))).toEqual(ours.tensors.map((tensor) => tensor.offset));
      for (const tensor of ours.tensors) expect(GGML_TYPES[tensor.type].id).toBe(tensor.typeId);

      const engine = await createLlamaCppEngine(out, { device: 'cpu', contextLength: WINDOW });
      try {
        const result = await engine.score(window, { distributions: 'full' });
        const vocab = engine.vocabSize;
        const rows = result.full as Float32Array;
        expect(rows).toHaveLength((WINDOW - 1) * vocab);
        for (const value of rows) if (!Number.isFinite(value)) throw new Error(`${type}: a non-finite log-probability`);
        for (let position = 0; position < WINDOW - 1; position += 1) {
          let mass = 0;
          for (let id = 0; id < vocab; id += 1) mass += Math.exp(rows[position * vocab + id] as number);
          expect(mass).toBeCloseTo(1, 3);
        }
        let nll = 0;
        for (const value of result.tokenLogProbs) nll -= value;
        const meanNll = nll / result.tokenLogProbs.length;
        if (type === 'f32') {
          f32Result.meanNll = meanNll;
          f32Result.argmax = result.argmax;
        }
        const reference = f32Result.argmax as Int32Array;
        const agree = result.argmax.filter((id, i) => id === reference[i]).length / result.argmax.length;
        const counts = new Map<string, number>();
        for (const tensor of ours.tensors) counts.set(tensor.type, (counts.get(tensor.type) ?? 0) + 1);
        console.log(
          `${type.padEnd(7)} ${String(bytes.length).padStart(9)} bytes, mean NLL ${meanNll.toFixed(4)} (f32 ${(f32Result.meanNll as number).toFixed(4)}), top-1 vs f32 ${(100 * agree).toFixed(1)}%, tensors ${[...counts].map(([name, count]) => `${name}×${count}`).join(' ')}`,
        );
        // Loose: quantization moves the numbers, a broken layout destroys them (a random model is ~log 30080 ≈ 10.3).
        expect(Math.abs(meanNll - (f32Result.meanNll as number))).toBeLessThan(0.75);
        expect(agree).toBeGreaterThanOrEqual(0.6);
      } finally {
        await engine.close();
      }
    });
  }
});
