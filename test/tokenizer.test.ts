import { describe, expect, it } from 'vitest';
import { loadTokenizer, readTokenizerFiles, summariseTokenizer, type TokenizerFiles } from '../src/readers/tokenizer.js';
import { buildTinyTokenizer, TINY_TOKENIZER_CONFIG } from '../src/synth/tiny-tokenizer.js';
import { HAS_SHARED, POLYGLOT_DATA_DIR } from './helpers/shared.js';

describe.skipIf(!HAS_SHARED)('the real polyglot-ko tokenizer', () => {
  it('is summarised with its vocabulary, merges and special tokens', async () => {
    const summary = summariseTokenizer(await readTokenizerFiles(POLYGLOT_DATA_DIR));
    expect(summary).toMatchObject({
      model: 'BPE',
      baseVocabSize: 30000,
      vocabSize: 30003,
      merges: 29740,
      byteLevel: true,
      preTokenizer: 'Sequence(Split, ByteLevel)',
      eos: { token: '<|endoftext|>', id: 2 },
      pad: { token: '<|endoftext|>', id: 2 },
    });
    expect(summary?.addedTokens.map((token) => [token.id, token.content])).toEqual([
      [0, '<|unused0|>'],
      [1, '<|unused1|>'],
      [2, '<|endoftext|>'],
      [3, '<|sep|>'],
      [30000, '<|acc|>'],
      [30001, '<|tel|>'],
      [30002, '<|rrn|>'],
    ]);
  });

  it('tokenizes Korean as the HF tokenizer does, adding no BOS or EOS', async () => {
    const tokenizer = loadTokenizer(await readTokenizerFiles(POLYGLOT_DATA_DIR));
    expect([...tokenizer.encode('안녕하세요')]).toEqual([13417, 284, 1934]);
    const text = '대한민국의 수도는 서울이다.\n오늘은 날씨가 맑다.';
    expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
  });
});

describe('the tiny byte-level BPE tokenizer', () => {
  const files = (): TokenizerFiles => ({
    dir: '/tiny',
    tokenizer: buildTinyTokenizer().tokenizer,
    tokenizerConfig: TINY_TOKENIZER_CONFIG,
    specialTokensMap: undefined,
    generationConfig: undefined,
  });

  it('is built deterministically', () => {
    expect(JSON.stringify(buildTinyTokenizer())).toBe(JSON.stringify(buildTinyTokenizer()));
  });

  it('round-trips Korean, English and bytes outside its merges', () => {
    const tokenizer = loadTokenizer(files());
    for (const text of ['서울은 큰 도시이다.', 'The quick brown fox', '😀 ünïcödé\t\n  spaces']) {
      expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
    }
    // Learned merges make common Korean shorter than its UTF-8 bytes.
    expect(tokenizer.encode('서울은 큰 도시이다.').length).toBeLessThan(new TextEncoder().encode('서울은 큰 도시이다.').length / 2);
  });

  it('puts the polyglot-ko special tokens at ids 0-3', () => {
    const summary = summariseTokenizer(files());
    expect(summary?.eos).toEqual({ token: '<|endoftext|>', id: 2 });
    expect(summary?.addedTokens.map((token) => token.content)).toEqual(['<|unused0|>', '<|unused1|>', '<|endoftext|>', '<|sep|>']);
    expect(summary?.vocabSize).toBeLessThanOrEqual(384);
  });
});
