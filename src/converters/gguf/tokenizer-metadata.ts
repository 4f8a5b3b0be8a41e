/**
 * tokenizer.ggml.* metadata for a byte-level BPE tokenizer (polyglot-ko, GPT-NeoX), written so that
 * llama.cpp tokenizes exactly like tokenizer.json (specs/gguf.md §3). What the stock converter would write
 * (conversion/base.py `get_vocab_base` + `_set_vocab_gpt2`, gguf-py/gguf/vocab.py `SpecialVocab`), except
 * that the pre-tokenizer is chosen here: polyglot-ko's chkhsh is not in llama.cpp's table, and `gpt-2`
 * gives HF-identical ids (§3.2–§3.4, verified on 1.4 MB of Korean text, §9.2).
 */
import { join } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { isRecord } from '../../readers/json-file.js';
import { TOKENIZER_FILE_NAMES, type TokenizerFiles } from '../../readers/tokenizer.js';
import type { GgufKV } from './format.js';

/** `llama_token_type` (include/llama.h; gguf-py constants.py `TokenType`). */
export const GGUF_TOKEN_TYPES = {
  normal: 1,
  unknown: 2,
  control: 3,
  userDefined: 4,
  unused: 5,
  byte: 6,
} as const;

/** `tokenizer.ggml.model` for byte-level BPE: llama-vocab.cpp maps "gpt2" to LLAMA_VOCAB_TYPE_BPE. */
export const GGUF_TOKENIZER_MODEL = 'gpt2';
/**
 * `tokenizer.ggml.pre`: GPT2 (like MPT and OLMO) runs the one GPT-2 regex HF's ByteLevel(use_regex) uses
 * (llama-vocab.cpp `llm_tokenizer_bpe`); "default" or a missing key splits digits and punctuation
 * differently, and an unknown string fails the load (specs/gguf.md §3.3).
 */
export const GGUF_TOKENIZER_PRE = 'gpt-2';

/**
 * Special token ids the stock converter looks up, in its order (vocab.py `SpecialVocab`
 * special_token_types; `cls` has no GGUF key and is skipped there too), with their GGUF keys
 * (constants.py `Keys.Tokenizer`; "seperator" is spelled so upstream).
 */
export const SPECIAL_TOKEN_KEYS = {
  bos: 'tokenizer.ggml.bos_token_id',
  eos: 'tokenizer.ggml.eos_token_id',
  unk: 'tokenizer.ggml.unknown_token_id',
  sep: 'tokenizer.ggml.seperator_token_id',
  pad: 'tokenizer.ggml.padding_token_id',
  mask: 'tokenizer.ggml.mask_token_id',
} as const;
export type SpecialTokenKind = keyof typeof SPECIAL_TOKEN_KEYS;
const SPECIAL_TOKEN_KINDS = Object.keys(SPECIAL_TOKEN_KEYS) as SpecialTokenKind[];

/** The one character polyglot-ko's pre-tokenizer removes (Split "ೱ" Removed); llama.cpp keeps it (§3.4). */
const POLYGLOT_REMOVED_CHARACTER = '\u0CF1';

export interface TokenizerMetadata {
  readonly kvs: GgufKV[];
  /** Tokens written: config.json vocab_size. */
  readonly tokens: number;
  /** Ids tokenizer.json defines; the rest are `[PAD{id}]` placeholders. */
  readonly definedTokens: number;
  readonly merges: number;
  readonly specialIds: Readonly<Partial<Record<SpecialTokenKind, number>>>;
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** Ways llama.cpp will tokenize differently from tokenizer.json (as data, for the caller to report). */
  readonly warnings: readonly string[];
}

interface AddedToken {
  readonly id: number;
  readonly content: string;
  readonly special: boolean;
}

/**
 * Builds the tokenizer KVs. `rawConfig` is config.json as written (its `*_token_id` fill special ids the
 * tokenizer files leave unset, vocab.py `_try_load_from_config_json`); `vocabSize` is config.json
 * vocab_size, the row count of the embedding, which the token list must match (specs/gguf.md §2.3).
 */
export function ggufTokenizerMetadata(
  files: TokenizerFiles,
  rawConfig: Readonly<Record<string, unknown>>,
  vocabSize: number,
): TokenizerMetadata {
  const file = join(files.dir, TOKENIZER_FILE_NAMES.tokenizer);
  const tokenizer = files.tokenizer;
  if (tokenizer === undefined) {
    throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'the model folder has no tokenizer.json, which the GGUF tokenizer metadata comes from', {
      file,
      hint: 'copy the model’s tokenizer.json next to config.json',
    });
  }
  const fail = (detail: string, code: typeof ERROR_CODES.CONFIG | typeof ERROR_CODES.UNSUPPORTED = ERROR_CODES.CONFIG): never => {
    throw new PolyquantError(code, detail, { file });
  };
  const model = tokenizer['model'];
  if (!isRecord(model)) return fail('tokenizer.json has no `model` object');
  if (model['type'] !== 'BPE') {
    return fail(`tokenizer model ${JSON.stringify(model['type'])} is not supported; GGUF gpt2 metadata needs byte-level BPE`, ERROR_CODES.UNSUPPORTED);
  }
  if (model['byte_fallback'] === true) {
    return fail('BPE with byte_fallback is SentencePiece-style, not GPT-2 byte-level BPE', ERROR_CODES.UNSUPPORTED);
  }
  const warnings = checkPreTokenizer(tokenizer, fail);

  // Token strings by id: model.vocab, then added_tokens at their ids (HF's get_vocab includes both).
  const strings: (string | undefined)[] = new Array(vocabSize);
  const vocab = model['vocab'];
  if (!isRecord(vocab)) return fail('tokenizer.json `model.vocab` is not an object of token → id');
  for (const [token, id] of Object.entries(vocab)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= vocabSize) {
      return fail(`vocab entry ${JSON.stringify(token)} has id ${JSON.stringify(id)}, outside 0..${vocabSize - 1} (config.json vocab_size)`);
    }
    if (strings[id] !== undefined) return fail(`tokens ${JSON.stringify(strings[id])} and ${JSON.stringify(token)} share id ${id}`);
    strings[id] = token;
  }
  const added = addedTokens(tokenizer, vocabSize, fail);
  const addedById = new Map(added.map((entry) => [entry.id, entry]));

  const tokens: string[] = new Array(vocabSize);
  const types: number[] = new Array(vocabSize);
  let definedTokens = 0;
  for (let id = 0; id < vocabSize; id += 1) {
    const entry = addedById.get(id);
    const token = entry?.content ?? strings[id];
    if (token === undefined) {
      // get_vocab_base: ids the tokenizer lacks (the embedding's padding rows) become unused placeholders.
      tokens[id] = `[PAD${id}]`;
      types[id] = GGUF_TOKEN_TYPES.unused;
      continue;
    }
    definedTokens += 1;
    if (entry === undefined) {
      tokens[id] = token;
      types[id] = GGUF_TOKEN_TYPES.normal;
    } else if (entry.special || looksSpecial(token)) {
      tokens[id] = token;
      types[id] = GGUF_TOKEN_TYPES.control;
    } else {
      // get_vocab_base pre-normalises user-defined spaces (U+2581 → ' '), as llama.cpp matches them raw.
      tokens[id] = token.replaceAll('\u2581', ' ');
      types[id] = GGUF_TOKEN_TYPES.userDefined;
    }
  }

  const merges = mergeList(model['merges'], fail);
  checkMergeCoverage(model['merges'] as unknown[], new Set(Object.keys(vocab)), fail);
  const specialIds = specialTokenIds(files, rawConfig, added, vocabSize);
  const { addBos, addEos } = addSpecialTokens(files, tokenizer, specialIds, tokens);

  const kvs: GgufKV[] = [
    { key: 'tokenizer.ggml.model', type: 'STRING', value: GGUF_TOKENIZER_MODEL },
    { key: 'tokenizer.ggml.pre', type: 'STRING', value: GGUF_TOKENIZER_PRE },
    { key: 'tokenizer.ggml.tokens', type: 'STRING', array: true, value: tokens },
    // INT32 is the only element type llama-vocab.cpp accepts for token_type (specs/gguf.md §3.1).
    { key: 'tokenizer.ggml.token_type', type: 'INT32', array: true, value: types },
    { key: 'tokenizer.ggml.merges', type: 'STRING', array: true, value: merges },
  ];
  for (const kind of SPECIAL_TOKEN_KINDS) {
    const id = specialIds[kind];
    if (id !== undefined) kvs.push({ key: SPECIAL_TOKEN_KEYS[kind], type: 'UINT32', value: id });
  }
  // Written even when false: the BPE default is false too, but an explicit key documents that HF adds
  // neither (polyglot-ko's post-processor is ByteLevel; specs/gguf.md §3.4 item 4).
  kvs.push({ key: 'tokenizer.ggml.add_bos_token', type: 'BOOL', value: addBos });
  kvs.push({ key: 'tokenizer.ggml.add_eos_token', type: 'BOOL', value: addEos });
  return { kvs, tokens: vocabSize, definedTokens, merges: merges.length, specialIds, addBos, addEos, warnings };
}

/** conversion/base.py `does_token_look_special`: added tokens that are control tokens even if not marked. */
function looksSpecial(token: string): boolean {
  return (
    ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(token) ||
    (token.startsWith('<|') && token.endsWith('|>')) ||
    (token.startsWith('<｜') && token.endsWith('｜>')) ||
    (token.startsWith('<unused') && token.endsWith('>'))
  );
}

function addedTokens(tokenizer: Record<string, unknown>, vocabSize: number, fail: (detail: string) => never): AddedToken[] {
  const raw = tokenizer['added_tokens'];
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) return fail('tokenizer.json `added_tokens` is not a list');
  return raw.map((entry: unknown) => {
    if (!isRecord(entry) || typeof entry['content'] !== 'string' || typeof entry['id'] !== 'number') {
      return fail(`added_tokens entry ${JSON.stringify(entry)} lacks a string content or a numeric id`);
    }
    const id = entry['id'];
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      return fail(`added token ${JSON.stringify(entry['content'])} has id ${id}, outside 0..${vocabSize - 1} (config.json vocab_size)`);
    }
    return { id, content: entry['content'], special: entry['special'] === true };
  });
}

/**
 * model.merges as llama.cpp reads them: "left right", split at the first space from index 1
 * (llama-vocab.cpp). The list-of-pairs format (tokenizers ≥ 0.20) is joined the way vocab.py does it,
 * with spaces inside a part written as U+0120.
 */
function mergeList(raw: unknown, fail: (detail: string) => never): string[] {
  if (!Array.isArray(raw) || raw.length === 0) return fail('tokenizer.json `model.merges` is missing or empty; llama.cpp needs the merges of a BPE tokenizer');
  return raw.map((merge: unknown, index) => {
    if (typeof merge === 'string') {
      if (merge.indexOf(' ', 1) < 1) fail(`merge ${index} ${JSON.stringify(merge)} is not "left right"`);
      return merge;
    }
    if (Array.isArray(merge) && merge.length === 2 && typeof merge[0] === 'string' && typeof merge[1] === 'string') {
      return merge.map((part: string) => part.replaceAll(' ', '\u0120')).join(' ');
    }
    return fail(`merge ${index} ${JSON.stringify(merge)} is neither "left right" nor a pair of strings`);
  });
}

/**
 * Both sides of every merge must be tokens of the vocabulary: the tokenizers library refuses such a file
 * when it loads it (BPE `MergeTokenOutOfVocabulary`), so a vocabulary cut short (100 entries, 29,740
 * merges) fails here, at convert time, naming the first bad merge, instead of in a later verify. (The
 * merged token itself is not required: llama.cpp falls back to byte tokens when it is missing.)
 */
function checkMergeCoverage(raw: readonly unknown[], vocab: ReadonlySet<string>, fail: (detail: string) => never): void {
  let bad = 0;
  let first: string | undefined;
  raw.forEach((merge, index) => {
    const parts = typeof merge === 'string' ? [merge.slice(0, merge.indexOf(' ', 1)), merge.slice(merge.indexOf(' ', 1) + 1)] : (merge as string[]);
    const [left = '', right = ''] = parts;
    const missing = [left, right].find((token) => !vocab.has(token));
    if (missing === undefined) return;
    bad += 1;
    first ??= `merge ${index} ${JSON.stringify(`${left} ${right}`)} needs token ${JSON.stringify(missing)}`;
  });
  if (bad > 0) {
    fail(`${bad} of ${raw.length} merges use tokens that are not in model.vocab (${vocab.size} entries); the first: ${first}. The tokenizer cannot be loaded as it is`);
  }
}

function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (isRecord(value) && typeof value['content'] === 'string') return value['content'];
  return undefined;
}

/**
 * vocab.py `SpecialVocab`: first tokenizer_config.json `{kind}_token`, looked up among added_tokens by
 * content (bos falls back to cls_token, eos to sep_token); then config.json `{kind}_token_id` for kinds
 * still unset. Ids past the vocabulary are skipped, as there.
 */
function specialTokenIds(
  files: TokenizerFiles,
  rawConfig: Readonly<Record<string, unknown>>,
  added: readonly AddedToken[],
  vocabSize: number,
): Partial<Record<SpecialTokenKind, number>> {
  const ids: Partial<Record<SpecialTokenKind, number>> = {};
  const config = files.tokenizerConfig ?? {};
  const named = (kind: SpecialTokenKind): string | undefined => {
    const own = tokenContent(config[`${kind}_token`]);
    if (own !== undefined) return own;
    if (kind === 'bos') return tokenContent(config['cls_token']);
    if (kind === 'eos') return tokenContent(config['sep_token']);
    return undefined;
  };
  for (const kind of SPECIAL_TOKEN_KINDS) {
    const content = named(kind);
    if (content === undefined) continue;
    const id = added.find((entry) => entry.content === content)?.id;
    if (id !== undefined && id < vocabSize) ids[kind] = id;
  }
  for (const kind of SPECIAL_TOKEN_KINDS) {
    if (ids[kind] !== undefined) continue;
    const id = rawConfig[`${kind}_token_id`];
    if (typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < vocabSize) ids[kind] = id;
  }
  return ids;
}

/**
 * Whether HF adds BOS/EOS around each text: from a RobertaProcessing or TemplateProcessing post-processor
 * (vocab.py's crude template parse: a leading / trailing special token), overridden by
 * tokenizer_config.json `add_bos_token` / `add_eos_token`. ByteLevel post-processing adds nothing.
 */
function addSpecialTokens(
  files: TokenizerFiles,
  tokenizer: Record<string, unknown>,
  ids: Partial<Record<SpecialTokenKind, number>>,
  tokens: readonly string[],
): { addBos: boolean; addEos: boolean } {
  let addBos = false;
  let addEos = false;
  const post = tokenizer['post_processor'];
  const processors = isRecord(post) ? (Array.isArray(post['processors']) ? post['processors'] : [post]) : [];
  const tokenOf = (kind: SpecialTokenKind): string | undefined => {
    const id = ids[kind];
    return id === undefined ? undefined : tokens[id];
  };
  const specialIn = (item: unknown): string | undefined =>
    isRecord(item) && isRecord(item['SpecialToken']) && typeof item['SpecialToken']['id'] === 'string' ? item['SpecialToken']['id'] : undefined;
  for (const processor of processors) {
    if (!isRecord(processor)) continue;
    if (processor['type'] === 'RobertaProcessing') {
      addBos = true;
      addEos = true;
    } else if (processor['type'] === 'TemplateProcessing' && Array.isArray(processor['single']) && processor['single'].length > 1) {
      const single = processor['single'] as unknown[];
      const first = specialIn(single[0]);
      const last = specialIn(single[single.length - 1]);
      if (first !== undefined) addBos = first === tokenOf('bos');
      if (last !== undefined) addEos = last === tokenOf('eos');
    }
  }
  const config = files.tokenizerConfig ?? {};
  if (typeof config['add_bos_token'] === 'boolean') addBos = config['add_bos_token'];
  if (typeof config['add_eos_token'] === 'boolean') addEos = config['add_eos_token'];
  return { addBos, addEos };
}

/**
 * llama.cpp's gpt-2 pre-tokenizer is exactly HF ByteLevel(use_regex=true, add_prefix_space=false). Anything
 * else in tokenizer.json's pipeline has no GGUF equivalent: refuse what is not byte-level at all, and
 * report what will tokenize differently.
 */
function checkPreTokenizer(tokenizer: Record<string, unknown>, fail: (detail: string, code?: typeof ERROR_CODES.UNSUPPORTED) => never): string[] {
  const warnings: string[] = [];
  const steps: Record<string, unknown>[] = [];
  const collect = (step: unknown): void => {
    if (!isRecord(step)) return;
    if (step['type'] === 'Sequence' && Array.isArray(step['pretokenizers'])) for (const inner of step['pretokenizers']) collect(inner);
    else steps.push(step);
  };
  collect(tokenizer['pre_tokenizer']);
  const byteLevel = steps.find((step) => step['type'] === 'ByteLevel');
  if (byteLevel === undefined) {
    fail('tokenizer.json has no ByteLevel pre-tokenizer; GGUF gpt2 metadata needs GPT-2 byte-level BPE', ERROR_CODES.UNSUPPORTED);
    return warnings;
  }
  if (byteLevel['use_regex'] === false) warnings.push('the ByteLevel pre-tokenizer does not split with the GPT-2 regex, but llama.cpp\'s gpt-2 pre-tokenizer does');
  if (byteLevel['add_prefix_space'] === true) warnings.push('the ByteLevel pre-tokenizer adds a prefix space, which llama.cpp\'s gpt-2 pre-tokenizer does not');
  for (const step of steps) {
    if (step === byteLevel) continue;
    const pattern = isRecord(step['pattern']) ? step['pattern']['String'] : undefined;
    if (step['type'] === 'Split' && pattern === POLYGLOT_REMOVED_CHARACTER && step['behavior'] === 'Removed') {
      // Said once per conversion, in words a user can act on; the details are in specs/gguf.md §3.4.
      warnings.push(
        'tokenizer.json deletes the character ೱ (U+0CF1, Kannada) before tokenizing and llama.cpp keeps it, so text containing ೱ tokenizes differently with this GGUF (Korean text does not contain it); to get the HF tokens for such text, remove U+0CF1 from it before giving it to llama.cpp',
      );
    } else {
      warnings.push(`pre-tokenizer step ${JSON.stringify(step['type'])} has no llama.cpp equivalent: tokenization may differ from tokenizer.json`);
    }
  }
  if (tokenizer['normalizer'] !== null && tokenizer['normalizer'] !== undefined) {
    warnings.push('tokenizer.json has a normalizer, which llama.cpp\'s gpt2 tokenizer does not apply');
  }
  const decoder = tokenizer['decoder'];
  if (isRecord(decoder) && decoder['type'] !== 'ByteLevel') {
    warnings.push(`the decoder is ${JSON.stringify(decoder['type'])}, but llama.cpp decodes gpt2 tokens as ByteLevel`);
  }
  return warnings;
}
