/**
 * Tokenizer files of an HF model folder: tokenizer.json (the `tokenizers` serialisation), and the
 * tokenizer_config.json / special_tokens_map.json / generation_config.json that say which tokens are
 * bos/eos/pad. Summarised for `inspect`; tokenized with @huggingface/tokenizers, a pure-JS port of the
 * Rust library that agrees with it on byte-level BPE (specs/runtimes.md §3).
 */
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { pathExists } from '../io/file.js';
import { isRecord, readJsonFile } from './json-file.js';

export const TOKENIZER_FILE_NAMES = {
  tokenizer: 'tokenizer.json',
  tokenizerConfig: 'tokenizer_config.json',
  specialTokensMap: 'special_tokens_map.json',
  generationConfig: 'generation_config.json',
} as const;

export interface TokenizerFiles {
  readonly dir: string;
  /** Parsed tokenizer.json, or undefined when the folder has none. */
  readonly tokenizer: Record<string, unknown> | undefined;
  readonly tokenizerConfig: Record<string, unknown> | undefined;
  readonly specialTokensMap: Record<string, unknown> | undefined;
  readonly generationConfig: Record<string, unknown> | undefined;
}

export async function readTokenizerFiles(dir: string): Promise<TokenizerFiles> {
  const load = async (name: string): Promise<Record<string, unknown> | undefined> => {
    const path = join(dir, name);
    if (!(await pathExists(path))) return undefined;
    const value = await readJsonFile(path);
    if (!isRecord(value)) {
      throw new PolyquantError(ERROR_CODES.CONFIG, 'expected a JSON object', { file: path });
    }
    return value;
  };
  return {
    dir,
    tokenizer: await load(TOKENIZER_FILE_NAMES.tokenizer),
    tokenizerConfig: await load(TOKENIZER_FILE_NAMES.tokenizerConfig),
    specialTokensMap: await load(TOKENIZER_FILE_NAMES.specialTokensMap),
    generationConfig: await load(TOKENIZER_FILE_NAMES.generationConfig),
  };
}

export interface AddedTokenSummary {
  readonly id: number;
  readonly content: string;
  readonly special: boolean;
}

export interface SpecialToken {
  readonly token: string | undefined;
  readonly id: number | undefined;
}

export interface TokenizerSummary {
  /** tokenizer.json `model.type` (BPE, WordPiece, Unigram …). */
  readonly model: string;
  /** Entries in `model.vocab`. */
  readonly baseVocabSize: number;
  /** Highest id in the vocabulary or added tokens, plus one: the rows an embedding needs at least. */
  readonly vocabSize: number;
  readonly merges: number;
  readonly addedTokens: readonly AddedTokenSummary[];
  /** Whether the pre-tokenizer (or one in its sequence) is ByteLevel: GPT-2-style byte-level BPE. */
  readonly byteLevel: boolean;
  readonly preTokenizer: string | undefined;
  readonly bos: SpecialToken;
  readonly eos: SpecialToken;
  readonly pad: SpecialToken;
  readonly unk: SpecialToken;
  /** Where the ids above come from when the files disagree (generation_config vs tokenizer_config). */
  readonly notes: readonly string[];
}

function describeComponent(value: unknown): string | undefined {
  if (!isRecord(value)) return undefined;
  const type = typeof value['type'] === 'string' ? value['type'] : 'unknown';
  for (const key of ['pretokenizers', 'processors', 'decoders', 'normalizers']) {
    const list = value[key];
    if (Array.isArray(list)) return `${type}(${list.map((item) => describeComponent(item) ?? '?').join(', ')})`;
  }
  return type;
}

function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (isRecord(value) && typeof value['content'] === 'string') return value['content'];
  return undefined;
}

/** The vocabulary as tokenizer.json defines it: model.vocab plus added_tokens. */
function vocabularyOf(tokenizer: Record<string, unknown>, file: string): {
  model: Record<string, unknown>;
  vocab: Map<string, number>;
  added: AddedTokenSummary[];
} {
  const model = tokenizer['model'];
  if (!isRecord(model) || typeof model['type'] !== 'string') {
    throw new PolyquantError(ERROR_CODES.CONFIG, 'tokenizer.json has no `model.type`', { file });
  }
  const vocab = new Map<string, number>();
  const rawVocab = model['vocab'];
  if (isRecord(rawVocab)) {
    for (const [token, id] of Object.entries(rawVocab)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
        throw new PolyquantError(ERROR_CODES.CONFIG, `vocab entry ${JSON.stringify(token)} has id ${JSON.stringify(id)}`, {
          file,
        });
      }
      vocab.set(token, id);
    }
  } else if (Array.isArray(rawVocab)) {
    // Unigram: a list of [piece, score]; ids are positions.
    rawVocab.forEach((entry, index) => {
      if (Array.isArray(entry) && typeof entry[0] === 'string') vocab.set(entry[0], index);
    });
  } else {
    throw new PolyquantError(ERROR_CODES.CONFIG, 'tokenizer.json `model.vocab` is missing', { file });
  }
  const added: AddedTokenSummary[] = [];
  const rawAdded = tokenizer['added_tokens'];
  if (Array.isArray(rawAdded)) {
    for (const entry of rawAdded) {
      if (!isRecord(entry) || typeof entry['id'] !== 'number' || typeof entry['content'] !== 'string') {
        throw new PolyquantError(ERROR_CODES.CONFIG, `malformed added_tokens entry ${JSON.stringify(entry)}`, { file });
      }
      added.push({ id: entry['id'], content: entry['content'], special: entry['special'] === true });
    }
  }
  return { model, vocab, added };
}

export function summariseTokenizer(files: TokenizerFiles): TokenizerSummary | undefined {
  const { tokenizer } = files;
  if (tokenizer === undefined) return undefined;
  const file = join(files.dir, TOKENIZER_FILE_NAMES.tokenizer);
  const { model, vocab, added } = vocabularyOf(tokenizer, file);
  const idOf = (token: string | undefined): number | undefined => {
    if (token === undefined) return undefined;
    return added.find((entry) => entry.content === token)?.id ?? vocab.get(token);
  };
  let maxId = -1;
  for (const id of vocab.values()) maxId = Math.max(maxId, id);
  for (const entry of added) maxId = Math.max(maxId, entry.id);

  const tokenAt = new Map<number, string>();
  for (const [token, id] of vocab) tokenAt.set(id, token);
  const notes: string[] = [];
  // Token strings: tokenizer_config.json wins over special_tokens_map.json, as transformers merges them.
  const named = (key: string): string | undefined =>
    tokenText(files.tokenizerConfig?.[key]) ?? tokenText(files.specialTokensMap?.[key]);
  const special = (key: 'bos' | 'eos' | 'pad' | 'unk'): SpecialToken => {
    const token = named(`${key}_token`);
    const id = idOf(token);
    const generationId = files.generationConfig?.[`${key}_token_id`];
    if (typeof generationId === 'number' && id !== undefined && generationId !== id) {
      notes.push(`${key}: generation_config.json says id ${generationId}, the tokenizer files say ${token} = ${id}`);
    }
    if (token === undefined && typeof generationId === 'number') {
      // Only the id is configured (polyglot-ko's bos_token_id 0): name the token it points at.
      const byId = added.find((entry) => entry.id === generationId)?.content ?? tokenAt.get(generationId);
      return { token: byId, id: generationId };
    }
    return { token, id };
  };

  const preTokenizer = describeComponent(tokenizer['pre_tokenizer']);
  const merges = model['merges'];
  return {
    model: model['type'] as string,
    baseVocabSize: vocab.size,
    vocabSize: maxId + 1,
    merges: Array.isArray(merges) ? merges.length : 0,
    addedTokens: added,
    byteLevel: preTokenizer?.includes('ByteLevel') ?? false,
    preTokenizer,
    bos: special('bos'),
    eos: special('eos'),
    pad: special('pad'),
    unk: special('unk'),
    notes,
  };
}

/** A loaded tokenizer: text → ids exactly as tokenizer.json defines, without adding BOS/EOS. */
export interface TextTokenizer {
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
}

export function loadTokenizer(files: TokenizerFiles): TextTokenizer {
  const file = join(files.dir, TOKENIZER_FILE_NAMES.tokenizer);
  if (files.tokenizer === undefined) {
    throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'the model folder has no tokenizer.json', { file });
  }
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(files.tokenizer, files.tokenizerConfig ?? {});
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new PolyquantError(ERROR_CODES.CONFIG, `tokenizer.json could not be loaded: ${reason}`, { file, cause: error });
  }
  return {
    encode: (text) => Int32Array.from(tokenizer.encode(text, { add_special_tokens: false }).ids),
    decode: (ids) => tokenizer.decode(Array.from(ids)),
  };
}
