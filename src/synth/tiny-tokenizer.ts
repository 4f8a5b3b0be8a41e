/**
 * A small byte-level BPE tokenizer (GPT-2 / polyglot-ko style) trained deterministically on a built-in
 * Korean + English sample, for tiny fixtures and for synthetic checkpoints when the real polyglot-ko
 * tokenizer is not at hand. Same special-token layout as polyglot-ko: ids 0–3 are `<|unused0|>`,
 * `<|unused1|>`, `<|endoftext|>` (eos/pad) and `<|sep|>`.
 */

const SAMPLE_TEXT = [
  '대한민국의 수도는 서울이다. 서울은 한강을 끼고 있는 큰 도시이다.',
  '오늘은 날씨가 맑고 바람이 시원하다. 우리는 공원에서 산책을 했다.',
  '한국어 언어 모델은 문장을 토큰으로 나누어 다음 토큰을 예측한다.',
  '양자화는 모델의 가중치를 적은 비트로 표현하여 메모리를 줄인다.',
  '그는 책을 읽고 그녀는 음악을 들었다. 아이들은 학교에 갔다.',
  '이 문장은 테스트를 위한 예시 문장입니다. 감사합니다. 안녕하세요.',
  '질문: 다음 중 옳은 것은? 답변: 첫 번째 문장이 옳다.',
  'The quick brown fox jumps over the lazy dog. Language models predict the next token.',
  'Quantization maps weights to fewer bits; perplexity measures how well a model predicts text.',
  'Numbers like 2024, 3.8 and 12,800 appear in text too: 1 2 3 4 5 6 7 8 9 0.',
].join('\n');

export const TINY_SPECIAL_TOKENS = ['<|unused0|>', '<|unused1|>', '<|endoftext|>', '<|sep|>'] as const;

/** GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards. */
export function byteToUnicode(): string[] {
  const direct = new Set<number>();
  for (let b = 0x21; b <= 0x7e; b += 1) direct.add(b);
  for (let b = 0xa1; b <= 0xac; b += 1) direct.add(b);
  for (let b = 0xae; b <= 0xff; b += 1) direct.add(b);
  const table: string[] = [];
  let next = 0;
  for (let b = 0; b < 256; b += 1) {
    table[b] = direct.has(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + next++);
  }
  return table;
}

/** GPT-2's pre-tokenizer split, as the ByteLevel pre-tokenizer applies it with use_regex. */
const WORD_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export interface TinyTokenizerJson {
  readonly tokenizer: Record<string, unknown>;
  readonly vocabSize: number;
}

/** Builds tokenizer.json with `mergeCount` merges learned from the sample text (deterministic). */
export function buildTinyTokenizer(mergeCount = 200): TinyTokenizerJson {
  const symbols = byteToUnicode();
  const encoder = new TextEncoder();
  const wordCounts = new Map<string, number>();
  for (const word of SAMPLE_TEXT.match(WORD_PATTERN) ?? []) {
    const mapped = [...encoder.encode(word)].map((b) => symbols[b] as string).join('\u0000');
    wordCounts.set(mapped, (wordCounts.get(mapped) ?? 0) + 1);
  }
  let words = [...wordCounts].map(([key, count]) => ({ parts: key.split('\u0000'), count }));
  const merges: [string, string][] = [];
  while (merges.length < mergeCount) {
    const pairCounts = new Map<string, number>();
    for (const { parts, count } of words) {
      for (let i = 0; i + 1 < parts.length; i += 1) {
        const key = `${parts[i]} ${parts[i + 1]}`;
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + count);
      }
    }
    let best: string | undefined;
    let bestCount = 1;
    for (const [key, count] of pairCounts) {
      if (count > bestCount || (count === bestCount && best !== undefined && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best === undefined) break;
    const [left, right] = best.split(' ') as [string, string];
    merges.push([left, right]);
    words = words.map(({ parts, count }) => {
      const merged: string[] = [];
      for (let i = 0; i < parts.length; i += 1) {
        if (parts[i] === left && parts[i + 1] === right) {
          merged.push(left + right);
          i += 1;
        } else merged.push(parts[i] as string);
      }
      return { parts: merged, count };
    });
  }

  const vocab: Record<string, number> = {};
  let id = 0;
  for (const token of TINY_SPECIAL_TOKENS) vocab[token] = id++;
  for (const symbol of symbols) vocab[symbol] = id++;
  for (const [left, right] of merges) if (!Object.hasOwn(vocab, left + right)) vocab[left + right] = id++;

  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: TINY_SPECIAL_TOKENS.map((content, index) => ({
      id: index,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      vocab,
      merges: merges.map(([left, right]) => `${left} ${right}`),
    },
  };
  return { tokenizer, vocabSize: id };
}

/** The small tokenizer_config / special_tokens_map / generation_config that go with it. */
export const TINY_TOKENIZER_CONFIG = {
  eos_token: '<|endoftext|>',
  pad_token: '<|endoftext|>',
  tokenizer_class: 'PreTrainedTokenizerFast',
};
export const TINY_SPECIAL_TOKENS_MAP = {
  additional_special_tokens: ['<|endoftext|>', '<|sep|>'],
  eos_token: '<|endoftext|>',
  pad_token: '<|endoftext|>',
};
