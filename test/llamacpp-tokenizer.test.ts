/**
 * Tokenization parity: llama.cpp tokenizing through our GGUF's tokenizer metadata must give exactly the ids
 * of tokenizer.json, on every text verify feeds a model — the evaluation texts whole (as perplexity
 * tokenizes them), line by line and paragraph by paragraph, and every KOBEST prompt and continuation.
 * A mismatch is printed with the text around it and both id lists around the first differing token.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { loadTokenizer, readTokenizerFiles, type TextTokenizer } from '../src/readers/tokenizer.js';
import { createLlamaCppEngine, type LlamaCppEngine } from '../src/verify/engines/llamacpp.js';
import { buildKobestRequests, KOBEST_TASK_NAMES, type KobestTaskName, loadKobestSplit } from '../src/verify/kobest/index.js';
import { firstTokenMismatch } from '../src/verify/verify.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-llamacpp-tokenizer-');
afterAll(() => scratch.remove());

interface Mismatch {
  readonly where: string;
  readonly report: string;
}

/** Compares both tokenizers on each text; returns how many texts were checked and the mismatches. */
function compareAll(
  llama: LlamaCppEngine,
  hf: TextTokenizer,
  texts: Iterable<readonly [where: string, text: string]>,
): { checked: number; tokens: number; mismatches: Mismatch[] } {
  let checked = 0;
  let tokens = 0;
  const mismatches: Mismatch[] = [];
  for (const [where, text] of texts) {
    const expected = hf.encode(text);
    const actual = llama.tokenize(text);
    checked += 1;
    tokens += expected.length;
    const index = firstTokenMismatch(expected, actual);
    if (index < 0) continue;
    const around = (ids: Int32Array): string => `[${Array.from(ids.subarray(Math.max(0, index - 4), index + 5)).join(', ')}]`;
    mismatches.push({
      where,
      report:
        `${where}: token ${index} of ${expected.length} (tokenizer.json) / ${actual.length} (llama.cpp) differs\n` +
        `  tokenizer.json ids from ${Math.max(0, index - 4)}: ${around(expected)}\n` +
        `  llama.cpp ids from ${Math.max(0, index - 4)}:      ${around(actual)}\n` +
        `  text (${text.length} chars): ${JSON.stringify(text.length > 300 ? `${text.slice(0, 300)}…` : text)}`,
    });
  }
  return { checked, tokens, mismatches };
}

function expectNoMismatch(result: { checked: number; tokens: number; mismatches: Mismatch[] }, what: string): void {
  const first = result.mismatches[0];
  if (first !== undefined) {
    console.log(`${what}: ${result.mismatches.length} of ${result.checked} texts differ; first:\n${first.report}`);
  }
  expect(result.mismatches.map((mismatch) => mismatch.where), first?.report).toEqual([]);
  expect(result.checked).toBeGreaterThan(0);
}

function* pieces(name: string, text: string): Generator<readonly [string, string]> {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i += 1) if (lines[i] !== '') yield [`${name} line ${i + 1}`, lines[i] as string];
  // Lines with their newline, as they sit inside the whole text.
  for (let i = 0; i + 1 < lines.length; i += 1) yield [`${name} line ${i + 1} + newline`, `${lines[i]}\n`];
  const paragraphs = text.split(/\n{2,}/);
  for (let i = 0; i < paragraphs.length; i += 1) yield [`${name} paragraph ${i + 1}`, paragraphs[i] as string];
}

describe.skipIf(!HAS_SHARED)('llama.cpp tokenizes through our GGUF exactly like tokenizer.json (polyglot-ko)', () => {
  let llama: LlamaCppEngine;
  let hf: TextTokenizer;

  beforeAll(async () => {
    const gguf = join(scratch.path, 'polyglot-ko-tiny-f16.gguf');
    await convertToGguf(POLYGLOT_TINY_DIR, { type: 'f16', out: gguf });
    // Only the tokenizer is used: a small context keeps the memory down.
    llama = await createLlamaCppEngine(gguf, { device: 'cpu', contextLength: 16 });
    hf = loadTokenizer(await readTokenizerFiles(POLYGLOT_TINY_DIR));
  });
  afterAll(async () => {
    await llama?.close();
  });

  for (const split of ['valid', 'train'] as const) {
    it(`korean-text ${split}.txt: the whole file at once (as verify tokenizes it), every line and every paragraph`, () => {
      const text = readFileSync(sharedPath('data', 'korean-text', `${split}.txt`), 'utf8');
      const whole = compareAll(llama, hf, [[`${split}.txt whole`, text]]);
      expectNoMismatch(whole, `${split}.txt whole`);
      const parts = compareAll(llama, hf, pieces(`${split}.txt`, text));
      expectNoMismatch(parts, `${split}.txt pieces`);
      console.log(`${split}.txt: whole (${whole.tokens} tokens) and ${parts.checked} lines/paragraphs (${parts.tokens} tokens) identical`);
    });
  }

  it('edge cases: special tokens in text, spaces, digits, punctuation, emoji, decomposed jamo, mixed scripts', () => {
    const cases = [
      '안녕하세요 세계',
      '<|endoftext|>',
      '문장 하나.<|endoftext|>문장 둘.',
      '<|sep|> 가 <|acc|><|tel|><|rrn|>',
      '   여러   칸의    공백   ',
      '\t탭과\n\n줄바꿈\r\n윈도우 줄바꿈',
      '2024년 12월 31일 오후 11시 59분, 3.14159, 1,000,000원',
      "I'm he's they'll we've it'd 's 't",
      '“따옴표” ‘작은따옴표’ 「괄호」 『겹낫표』 … — – ·',
      '😀👍🏽🇰🇷 이모지 👨‍👩‍👧‍👦',
      '\u1112\u1161\u11ab\u1100\u1173\u11af',
      '漢字 ひらがな カタカナ English Русский العربية',
      ' 앞 공백',
      '끝 공백 ',
      '',
      '\u00a0줄바꿈 없는 공백\u3000전각 공백',
    ];
    expectNoMismatch(
      compareAll(
        llama,
        hf,
        cases.map((text, i) => [`case ${i}`, text] as const),
      ),
      'edge cases',
    );
  });

  it('reports a mismatch with the token index, both id lists around it and the text', () => {
    const dropsFirst: TextTokenizer = { encode: (text) => hf.encode(text).slice(1), decode: (ids) => hf.decode(ids) };
    const result = compareAll(llama, dropsFirst, [['sample', '안녕하세요 세계']]);
    expect(result.mismatches).toHaveLength(1);
    expect(result.mismatches[0]?.report).toMatch(/sample: token 0 of 3 \(tokenizer.json\) \/ 4 \(llama.cpp\) differs/);
    expect(result.mismatches[0]?.report).toContain('llama.cpp ids from 0:      [13417, 284, 1934, 1076]');
    expect(result.mismatches[0]?.report).toContain('"안녕하세요 세계"');
  });

  it('U+0CF1: llama.cpp keeps it as bytes — and so does @huggingface/tokenizers 0.2.0, unlike the Rust library', () => {
    // specs/gguf.md §3.4/§9: polyglot-ko's pre-tokenizer starts with Split("ೱ", Removed); the Rust
    // `tokenizers` drops the character (abcೱdef → [10144, 70, 71, 26477]) and llama.cpp has no equivalent.
    // The JS port compiles a String pattern with invert: false to /(ೱ)/ and String.split keeps captured
    // separators, so it keeps the character too: llama.cpp and our tokenizer agree, both differ from
    // Python. None of the evaluation texts contains U+0CF1.
    const text = 'abc\u0cf1def';
    const keptAsBytes = [10144, 70, 160, 115, 113, 71, 26477];
    expect(Array.from(llama.tokenize(text))).toEqual(keptAsBytes);
    expect(Array.from(hf.encode(text))).toEqual(keptAsBytes);
  });

  for (const task of KOBEST_TASK_NAMES) {
    it(`KOBEST ${task} validation: every 0-shot prompt and continuation, and the 5-shot prompts of the first 100 documents`, async () => {
      const dir = sharedPath('data', 'kobest');
      const validation = await loadKobestSplit(dir, task as KobestTaskName, 'validation');
      const train = await loadKobestSplit(dir, task as KobestTaskName, 'train');
      const zeroShot = buildKobestRequests({ task: task as KobestTaskName, documents: validation.documents, train: [], shots: 0 });
      const fiveShot = buildKobestRequests({ task: task as KobestTaskName, documents: validation.documents, train: train.documents, shots: 5, limit: 100 });
      function* texts(): Generator<readonly [string, string]> {
        for (const request of zeroShot) {
          yield [`${task} doc ${request.document.idx} prompt`, request.context];
          for (const [i, continuation] of request.continuations.entries()) yield [`${task} doc ${request.document.idx} continuation ${i}`, continuation];
        }
        for (const request of fiveShot) yield [`${task} doc ${request.document.idx} 5-shot prompt`, request.context];
      }
      const result = compareAll(llama, hf, texts());
      expectNoMismatch(result, `KOBEST ${task}`);
      expect(result.checked).toBeGreaterThan(zeroShot.length * 3);
    });
  }
});
