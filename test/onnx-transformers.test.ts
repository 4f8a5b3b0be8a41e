/**
 * A real client: transformers.js (@huggingface/transformers, pinned dev dependency) loads our ONNX folder
 * offline and its greedy generate() must equal the greedy continuation of our own engines — the reference
 * engine for fp32, the onnx engine on the same file for q8 and q4 — and a left-padded batch of two prompts
 * must give each prompt's tokens alone.
 */
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToOnnx } from '../src/converters/onnx/convert.js';
import type { Engine } from '../src/verify/engine.js';
import { createOnnxEngine } from '../src/verify/engines/onnx.js';
import { createReferenceEngine } from '../src/verify/engines/reference.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-onnx-tjs-');
afterAll(() => scratch.remove());
const NEW_TOKENS = 32;
const PROMPTS = ['한국어 문장을 생성합니다.', '오늘 날씨는 맑고 바람이 많이 불어서 사람들이'];

/**
 * Greedy decoding with an engine: the most probable token after the whole sequence, appended, `steps`
 * times. `score` predicts tokens[from] from what precedes it, so a placeholder is scored in the slot the
 * next token will take; its argmax is the prediction.
 */
async function greedy(engine: Engine, prompt: Int32Array, steps: number): Promise<number[]> {
  const tokens = [...prompt];
  for (let step = 0; step < steps; step++) {
    const result = await engine.score(Int32Array.from([...tokens, 0]), { from: tokens.length });
    tokens.push(result.argmax[0] as number);
  }
  return tokens.slice(prompt.length);
}

interface TransformersModule {
  env: { allowRemoteModels: boolean; allowLocalModels: boolean; localModelPath: string };
  AutoTokenizer: { from_pretrained(name: string): Promise<TjsTokenizer> };
  AutoModelForCausalLM: { from_pretrained(name: string, options: { dtype: string; device: string }): Promise<TjsModel> };
}
interface TjsTokenizer {
  (text: string | string[], options?: { padding?: boolean }): Record<string, unknown>;
  padding_side: string;
}
interface TjsModel {
  generate(options: Record<string, unknown>): Promise<{ tolist(): (number | bigint)[][] }>;
  dispose(): Promise<unknown>;
}

describe.skipIf(!HAS_SHARED)('transformers.js loads the ONNX folder and generates what our engines generate', () => {
  let folder = '';
  let transformers: TransformersModule;
  let tokenizer: TjsTokenizer;
  beforeAll(async () => {
    folder = join(scratch.path, 'polyglot-ko-tiny-onnx');
    await convertToOnnx(POLYGLOT_TINY_DIR, { types: ['fp32', 'q8', 'q4'], out: folder });
    // q8: the default MatMulNBits 8-bit (batch-invariant; MatMulInteger is not, see DESIGN-NOTES.md)
    transformers = (await import('@huggingface/transformers')) as unknown as TransformersModule;
    transformers.env.allowRemoteModels = false;
    transformers.env.allowLocalModels = true;
    transformers.env.localModelPath = resolve(scratch.path);
    tokenizer = await transformers.AutoTokenizer.from_pretrained('polyglot-ko-tiny-onnx');
  }, 120_000);

  for (const dtype of ['fp32', 'q8', 'q4'] as const) {
    it(`${dtype}: greedy generate() of ${NEW_TOKENS} tokens equals our engine's, alone and in a padded batch`, async () => {
      const model = await transformers.AutoModelForCausalLM.from_pretrained('polyglot-ko-tiny-onnx', { dtype, device: 'cpu' });
      const engine =
        dtype === 'fp32' ? await createReferenceEngine(POLYGLOT_TINY_DIR, { threads: 0 }) : await createOnnxEngine(folder, { onnxType: dtype, threads: 2 });
      try {
        const alone: number[][] = [];
        for (const prompt of PROMPTS) {
          const inputs = tokenizer(prompt);
          const ids = (inputs.input_ids as { tolist(): (number | bigint)[][] }).tolist()[0]?.map(Number) ?? [];
          expect(Array.from(engine.tokenize(prompt))).toEqual(ids);
          const output = await model.generate({ ...inputs, max_new_tokens: NEW_TOKENS, do_sample: false });
          const generated = (output.tolist()[0] ?? []).map(Number).slice(ids.length);
          expect(generated.length).toBe(NEW_TOKENS);
          expect(generated).toEqual(await greedy(engine, Int32Array.from(ids), NEW_TOKENS));
          alone.push(generated);
        }
        // Batched: transformers.js pads on the left; the plain-ops graph masks the pads exactly.
        tokenizer.padding_side = 'left';
        const batch = tokenizer(PROMPTS, { padding: true });
        const width = (batch.input_ids as { dims: number[] }).dims[1] as number;
        const output = await model.generate({ ...batch, max_new_tokens: NEW_TOKENS, do_sample: false });
        const rows = output.tolist().map((row) => row.map(Number).slice(width));
        expect(rows).toEqual(alone);
      } finally {
        await engine.close();
        await model.dispose();
      }
    }, 180_000);
  }
});
