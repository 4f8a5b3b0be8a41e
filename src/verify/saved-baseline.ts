/**
 * Saved baselines, as llama-perplexity's `--kl-divergence-base`: `verify --save-baseline FILE` writes the
 * baseline's side of a comparison to one portable file while the comparison runs, and a later
 * `verify CANDIDATE --baseline FILE` compares against it without loading any baseline model. A baseline that
 * takes twenty minutes to score is paid once, not on every candidate.
 *
 * What is kept (everything a comparison reads from the baseline, BaselineSource):
 * - each text's token ids (int32), so the baseline model is not needed to tokenize it; the candidate must
 *   tokenize the text to the same ids (verify checks every id), and a fixed probe text to the same ids
 *   (a tokenizer fingerprint that also covers KOBEST prompts);
 * - per scored position: the target token's log-probability (float64) and the argmax (int32), exactly as
 *   the engine gave them: perplexity, bits per byte and top-1 agreement come out bit for bit;
 * - with KL divergence, per scored position the next-token distribution as 16-bit log-probabilities:
 *   code_i = round((max − log p_i) / step) with step = min(max − min, 32 nats) / 65535, and an offset
 *   (float64) chosen at save time so the decoded row, offset − code_i × step, has the row's own mass
 *   (Σ exp = 1 up to the engine's rounding).
 *   Entries more than 32 nats below the row's top (mass ≤ vocab × e^−32) sit at the floor. The decoded row
 *   replaces the engine's: the KL divergence differs from the full-row one by Σ p (e − ē) δ + ½ Var_p(e)
 *   (e: rounding error, |e| ≤ step / 2; δ = log p − log q), below step · √(2·KLD) + step² per position,
 *   plus 2^−24 · log(vocab) for the float32 rows (savedKldTolerance: ≤ 3.7e-4 · √(2·KLD) + 7.5e-7 nats for
 *   a row spanning 24 nats of polyglot-ko's 30,080); the mean KLD carries a bias of
 *   about step² / 24 ≈ 2e-9 nats. Measured on polyglot-ko-tiny (test/saved-baseline.test.ts): mean KLD
 *   within 0.04 % for a q8_0 (KLD 1e-5), 0.002 % for q4_0 and q2_k; every position within the bound. llama-perplexity stores uint16 log-probabilities
 *   too, but clamps at 16 nats below the top and does not renormalise: on a flat distribution its mean KLD
 *   for a q8_0 was 13× the true one in our measurement, which is why this one spans 32 nats and renormalises;
 *   top-k with the rest's mass in one bucket underestimated it by 41 % (k = 32) to 14 % (k = 1024) there.
 *   Size: 2 × vocab + 28 bytes per scored position (60,188 bytes for polyglot-ko's 30,080 rows; 796 for the
 *   bundled tiny model's 384), 12 bytes without KL divergence (--no-kld).
 * - the baseline's KOBEST results with every document's log-likelihoods (JSON), so the paired comparison
 *   (flips, McNemar, intervals) is the one a fresh baseline run gives.
 *
 * Layout (all integers little-endian):
 *   magic "PQBASELN" | u32 format version (1) | u32 header length H | u32 CRC-32 of the header
 *   | header: H bytes of UTF-8 JSON (schema polyquant.saved-baseline/1: the settings the baseline was scored
 *     with, what it was made from, the vocabulary and context sizes, the tokenizer fingerprint, the texts by
 *     sha256, the KOBEST request with its data's sha256)
 *   | sections, in the order they were scored: per text its tokens (int32 × n) then its windows (per window:
 *     float64 target log-probs × s, [float64 row offsets × s, float64 row steps × s], int32 argmax × s,
 *     [uint16 codes × s × vocab]); then the KOBEST report (UTF-8 JSON)
 *   | footer: UTF-8 JSON (each section's offset, length and CRC-32)
 *   | u32 footer length F | u32 CRC-32 of the footer | end magic "PQBASEND".
 * The file is written as the comparison streams (one window in memory at a time), under a temp name that
 * is renamed when the comparison has finished (io/file.ts AtomicFile): a failed or interrupted run leaves
 * no file. Reading checks, in order, the size, the magic and version, the header (length, CRC, UTF-8,
 * JSON, fields), the trailer and footer the same way, and that the sections tile the file between header
 * and footer with no gap or overlap; each section's CRC is checked when it is read. Any failure is a
 * MALFORMED error naming the file and what is wrong.
 *
 * A saved baseline answers only the questions it was made for: a later run is refused (exit 2, naming
 * what differs) when its texts (content), ctx, protocol, stride or max-windows, KOBEST data (content),
 * split or limit differ, when it asks for tasks, shot counts or KL divergence the file does not hold, or
 * when the candidate has another vocabulary size, tokenizer or (for KOBEST) a context that changes
 * max_length. Subsets are fine: some of its texts, tasks or shot counts, or --no-kld.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { endianness } from 'node:os';
import { resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { AtomicFile, ReadableFile } from '../io/file.js';
import type { OpenedBaseline } from './baseline-source.js';
import type { BaselineSource } from './baseline-source.js';
import type { Engine } from './engine.js';
import { type KobestInputs, type KobestReport, type KobestRunOptions, type KobestTaskName, isKobestTaskName, KOBEST_SPLITS, KOBEST_TASK_NAMES } from './kobest/index.js';
import { PERPLEXITY_PROTOCOLS, type PerplexityProtocol, type ScoreWindowsOptions, type WindowPlan, type WindowScore } from './perplexity.js';
import { polyquantVersion } from './provenance.js';
import type { ModelDescription } from './report.js';
import { readTextFile } from './text.js';
import { DEFAULT_CTX, type VerifyOptions } from './verify.js';

export const SAVED_BASELINE_SCHEMA = 'polyquant.saved-baseline/1';
const MAGIC = 'PQBASELN';
const END_MAGIC = 'PQBASEND';
const FORMAT_VERSION = 1;
/** magic, version, header length, header CRC. */
const PREAMBLE_BYTES = 20;
/** footer length, footer CRC, end magic. */
const TRAILER_BYTES = 16;
/** The header holds settings and a few hashes: kilobytes. 16 MiB is far past any real one. */
const MAX_HEADER_BYTES = 16 << 20;
/** The footer holds ~120 bytes per window: 64 MiB is half a million windows. */
const MAX_FOOTER_BYTES = 64 << 20;
/** The KOBEST section: ~200 bytes per document and shot count (all five test splits: ~2 MB). */
const MAX_KOBEST_BYTES = 256 << 20;
/** Log-probabilities more than this many nats below a row's top are stored at that floor (mass ≤ vocab × e^−32). */
export const ROW_RANGE_NATS = 32;
/** uint16 codes: 0 is the row's top, 65535 its floor. */
const CODE_LEVELS = 65535;
/** Stored per scored position: target log-prob (8) + argmax (4), and with rows the offset and step (16). */
const SCALAR_BYTES = 12;
const ROW_HEADER_BYTES = 16;

/**
 * A fixed text every tokenizer must split into the ids the baseline's did: Korean prose and jamo, KOBEST's
 * answer words, Latin, digits, CJK, emoji and whitespace runs. With the texts' own ids (checked token by
 * token) it tells tokenizers apart even for a KOBEST-only baseline.
 */
export const TOKENIZER_PROBE =
  '대한민국의 수도는 서울이고, 한강이 도시를 가로지른다. 예 아니오 긍정 부정 그렇다 아니다 따라서 왜냐하면\n' +
  'ㄱㄴㄷ ㅏㅑㅓ 뷁 똠얌꿍 햏 The quick brown fox jumps over the lazy dog. 0123456789 3.14159 1,000,000\n' +
  '漢字 ひらがな カタカナ 😀 🇰🇷 — “quotes” (brackets) [x] {y} <z> #@$%^&*_+=|\\/~`\n  two  spaces\tand a tab\n\n\r\nend';

/** The settings the baseline was scored with (what a later run must match), as stored in the header. */
interface PerplexitySettings {
  readonly ctx: number;
  readonly protocol: PerplexityProtocol;
  /** The strided protocol's stride (its default resolved); null for the others. */
  readonly stride: number | null;
  readonly max_windows: number | null;
  /** Whether next-token rows are stored (KL divergence). */
  readonly kld: boolean;
}

interface SavedText {
  /** The path it was read from when saved (for messages). */
  readonly file: string;
  readonly sha256: string;
  readonly bytes: number;
}

interface KobestSettings {
  readonly split: string;
  readonly limit: number | null;
  readonly tasks: readonly KobestTaskName[];
  readonly shots: readonly number[];
  readonly max_length: number;
  /** Per task: sha256 of the evaluated split's documents and (with shots > 0) of the train split's. */
  readonly data: Readonly<Record<string, { readonly sha256: string; readonly train_sha256: string | null }>>;
}

export interface SavedBaselineHeader {
  readonly schema: typeof SAVED_BASELINE_SCHEMA;
  readonly created: string;
  readonly polyquant_version: string;
  /** The baseline model as the saving run described it. */
  readonly baseline: ModelDescription;
  readonly vocab_size: number;
  readonly context_length: number;
  readonly tokenizer: { readonly probe_tokens: number; readonly probe_sha256: string };
  readonly perplexity: PerplexitySettings | null;
  readonly texts: readonly SavedText[];
  readonly kobest: KobestSettings | null;
  /** How next-token rows are stored (see the module comment); null without them. */
  readonly rows: { readonly encoding: 'u16-log-prob'; readonly range_nats: number } | null;
}

interface SectionRef {
  readonly offset: number;
  readonly bytes: number;
  readonly crc32: number;
}

interface WindowRef extends SectionRef {
  readonly start: number;
  readonly length: number;
  readonly from: number;
}

interface Footer {
  readonly texts: readonly { readonly tokens: SectionRef & { readonly count: number }; readonly windows: readonly WindowRef[] }[];
  readonly kobest: SectionRef | null;
}

/** What the report says about a saved baseline (report.ts ModelDescription.saved_baseline). */
export interface SavedBaselineNote {
  readonly file: string;
  /** `read`: this run compared against the file (no baseline model loaded); `written`: this run saved it. */
  readonly role: 'read' | 'written';
  readonly schema: string;
  readonly created: string;
  readonly polyquant_version: string;
  readonly bytes: number;
}

const sha256Hex = (bytes: Uint8Array | string): string => createHash('sha256').update(bytes).digest('hex');
const utf8 = new TextEncoder();
const bytesOf = (array: Float64Array | Int32Array | Uint16Array): Uint8Array => new Uint8Array(array.buffer, array.byteOffset, array.byteLength);

function requireLittleEndian(): void {
  // Sections are typed-array views of the file's bytes; the layout is little-endian.
  if (endianness() !== 'LE') throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'saved baselines are read and written on little-endian machines only');
}

/** Bytes of one window's record: scalars, and with rows their offsets, steps and codes. */
export function windowRecordBytes(scored: number, vocab: number, rows: boolean): number {
  return scored * (SCALAR_BYTES + (rows ? ROW_HEADER_BYTES + 2 * vocab : 0));
}

/**
 * Encodes `positions` rows of natural-log probabilities (row-major, `vocab` wide) into uint16 codes and a
 * per-row offset and step such that offset − code × step is a normalised log-distribution (module comment).
 * A row with a NaN or an infinite top is stored as NaN (it decodes to NaN, as broken as it came).
 */
export function encodeRows(full: Float32Array, positions: number, vocab: number, offsets: Float64Array, steps: Float64Array, codes: Uint16Array): void {
  for (let position = 0; position < positions; position += 1) {
    const base = position * vocab;
    let max = Number.NEGATIVE_INFINITY;
    let min = Number.POSITIVE_INFINITY;
    let nan = false;
    for (let i = base; i < base + vocab; i += 1) {
      const value = full[i] as number;
      if (Number.isNaN(value)) nan = true;
      if (value > max) max = value;
      if (value < min) min = value;
    }
    if (nan || !Number.isFinite(max)) {
      offsets[position] = Number.NaN;
      steps[position] = 0;
      codes.fill(0, base, base + vocab);
      continue;
    }
    const step = Math.min(max - min, ROW_RANGE_NATS) / CODE_LEVELS;
    const inverse = step > 0 ? 1 / step : 0;
    // Σ exp(−code × step) and the row's own mass Σ exp(value − max), with one exp per entry: the decoded
    // entry is the original times exp(−ε), ε = code × step − (max − value), |ε| ≤ step / 2 ≤ 2.5e-4, whose
    // cubic Taylor polynomial is exact to 1e-16. Entries past the floor (ε large) take their own exp.
    let sum = 0;
    let mass = 0;
    for (let i = base; i < base + vocab; i += 1) {
      const depth = max - (full[i] as number);
      // Rounded half up (depth ≥ 0); −∞ and anything past the floor land on the floor code. A flat row has
      // step 0 and every depth 0.
      const scaled = depth * inverse + 0.5;
      const code = scaled >= CODE_LEVELS ? CODE_LEVELS : scaled | 0;
      codes[i] = code;
      const relative = Math.exp(-depth);
      mass += relative;
      const epsilon = code * step - depth;
      sum += epsilon > -step && epsilon < step ? relative * (1 - epsilon * (1 - epsilon * (0.5 - epsilon / 6))) : Math.exp(-code * step);
    }
    // The decoded row offset − code × step has Σ exp = exp(offset) × sum. The offset gives it the row's own
    // mass, exp(max) × mass (1 up to the engine's float32 rounding, which the full-row KL divergence carries
    // too): without it, a q8_0's KLD of ~1e-6 would move by the rows' normalisation error (~1e-8), not by
    // the 16-bit codes.
    offsets[position] = max + Math.log(mass) - Math.log(sum);
    steps[position] = step;
  }
}

/**
 * The documented bound on |KLD from the saved row − KLD from the full row| at one position, for a row of
 * `vocab` entries stored with `step` and a full-row KL divergence `kld` (module comment):
 * step · √(2·KLD) + step² + 2^−24 · log(vocab). The last term is the float32 rounding of the decoded row
 * (≤ 2^−24 |log p| per entry, p-weighted: ≤ 2^−24 × the entropy): the full rows carry the same.
 */
export function savedKldTolerance(step: number, kld: number, vocab: number): number {
  return step * Math.sqrt(2 * Math.max(0, kld)) + step * step + 2 ** -24 * Math.log(vocab);
}

/** Decodes rows written by encodeRows into `into` (float32 log-probabilities). */
export function decodeRows(offsets: Float64Array, steps: Float64Array, codes: Uint16Array, positions: number, vocab: number, into: Float32Array): void {
  for (let position = 0; position < positions; position += 1) {
    const offset = offsets[position] as number;
    const step = steps[position] as number;
    const base = position * vocab;
    for (let i = base; i < base + vocab; i += 1) into[i] = offset - (codes[i] as number) * step;
  }
}

/** Whether `path` is a file that starts with the saved-baseline magic (anything else: false). */
export async function isSavedBaselineFile(path: string): Promise<boolean> {
  const info = await stat(path).catch(() => undefined);
  if (info === undefined || !info.isFile() || info.size < MAGIC.length) return false;
  const file = await ReadableFile.open(path).catch(() => undefined);
  if (file === undefined) return false;
  try {
    return new TextDecoder().decode(await file.read(0, MAGIC.length)) === MAGIC;
  } catch {
    return false;
  } finally {
    await file.close();
  }
}

/** The perplexity settings a verify run with these options scores with (defaults resolved). */
function perplexitySettings(options: Omit<VerifyOptions, 'candidate'>): PerplexitySettings {
  const ctx = options.ctx ?? DEFAULT_CTX;
  const protocol = options.protocol ?? 'windows';
  return {
    ctx,
    protocol,
    stride: protocol === 'strided' ? (options.stride ?? Math.max(1, Math.floor(ctx / 2))) : null,
    max_windows: options.maxWindows ?? null,
    kld: options.kld ?? true,
  };
}

/** sha256 of the documents a KOBEST task reads (parsed, so the JSONL and TSV layouts of one split match). */
function kobestData(inputs: KobestInputs): Record<string, { sha256: string; train_sha256: string | null }> {
  const data: Record<string, { sha256: string; train_sha256: string | null }> = {};
  for (const [task, { evaluated, train }] of inputs) {
    data[task] = { sha256: sha256Hex(JSON.stringify(evaluated.documents)), train_sha256: train === undefined ? null : sha256Hex(JSON.stringify(train.documents)) };
  }
  return data;
}

/** Non-finite numbers survive JSON as tagged strings (a broken model's NaN log-likelihood stays NaN). */
const NON_FINITE_TAG = '\u0000non-finite:';
const jsonReplacer = (_key: string, value: unknown): unknown =>
  typeof value === 'number' && !Number.isFinite(value) ? `${NON_FINITE_TAG}${String(value)}` : value;
const jsonReviver = (_key: string, value: unknown): unknown =>
  typeof value === 'string' && value.startsWith(NON_FINITE_TAG) ? Number(value.slice(NON_FINITE_TAG.length)) : value;

// ————————————————————————————————————————————————— writing —————————————————————————————————————————————————

/**
 * Records the baseline's side of a verify run into a saved-baseline file: `source` passes every call to the
 * baseline and writes what it returns. `commit` (once every comparison is done) writes the footer and renames
 * the file into place; `abort` removes it.
 */
export class SavedBaselineRecorder {
  readonly source: BaselineSource;
  private readonly textIndex = new Map<string, number>();
  private readonly tokensByText = new WeakMap<Int32Array, number>();
  private readonly footerTexts: ({ tokens: SectionRef & { count: number }; windows: WindowRef[]; complete: boolean } | undefined)[];
  private kobestRef: SectionRef | null = null;
  private buffer = new ArrayBuffer(0);

  private constructor(
    private readonly out: AtomicFile,
    private readonly file: string,
    private readonly header: SavedBaselineHeader,
    private readonly inner: OpenedBaseline,
  ) {
    for (const [index, text] of header.texts.entries()) this.textIndex.set(text.sha256, index);
    this.footerTexts = header.texts.map(() => undefined);
    const source = inner.source;
    this.source = {
      vocabSize: source.vocabSize,
      contextLength: source.contextLength,
      tokenize: async (text) => this.recordTokens(text, await source.tokenize(text)),
      scoreWindows: (tokens, windows, options) => this.recordWindows(tokens, windows, options, source.scoreWindows(tokens, windows, options)),
      runKobest: async (options) => this.recordKobest(options, await source.runKobest(options)),
    };
  }

  /**
   * Opens `file` (under a temp name) for the baseline of a verify run with `options`, after both models are
   * loaded: the header needs the baseline's sizes and tokenizer and the KOBEST max_length the two share.
   */
  static async create(file: string, baseline: OpenedBaseline, candidate: Pick<Engine, 'contextLength'>, options: Omit<VerifyOptions, 'candidate'>, kobestInputs: KobestInputs | undefined): Promise<SavedBaselineRecorder> {
    requireLittleEndian();
    const absolute = resolve(file);
    const texts: SavedText[] = [];
    for (const path of options.pplFiles ?? []) {
      const text = await readTextFile(path);
      const sha256 = sha256Hex(utf8.encode(text.text));
      if (!texts.some((known) => known.sha256 === sha256)) texts.push({ file: text.file, sha256, bytes: text.bytes });
    }
    const probe = await baseline.source.tokenize(TOKENIZER_PROBE);
    const perplexity = texts.length > 0 ? perplexitySettings(options) : null;
    const header: SavedBaselineHeader = {
      schema: SAVED_BASELINE_SCHEMA,
      created: new Date().toISOString(),
      polyquant_version: polyquantVersion(),
      baseline: baseline.description,
      vocab_size: baseline.source.vocabSize,
      context_length: baseline.source.contextLength,
      tokenizer: { probe_tokens: probe.length, probe_sha256: sha256Hex(bytesOf(probe)) },
      perplexity,
      texts,
      kobest:
        options.kobestDir === undefined || kobestInputs === undefined
          ? null
          : {
              split: options.split ?? 'test',
              limit: options.limit ?? null,
              tasks: [...kobestInputs.keys()],
              shots: [...(options.shots ?? [0])],
              // verify's compareKobestRuns: one max_length for both models.
              max_length: Math.min(baseline.source.contextLength, candidate.contextLength),
              data: kobestData(kobestInputs),
            },
      rows: perplexity?.kld === true ? { encoding: 'u16-log-prob', range_nats: ROW_RANGE_NATS } : null,
    };
    const out = await AtomicFile.create(absolute);
    try {
      const headerBytes = utf8.encode(JSON.stringify(header));
      const preamble = new DataView(new ArrayBuffer(PREAMBLE_BYTES));
      utf8.encodeInto(MAGIC, new Uint8Array(preamble.buffer, 0, 8));
      preamble.setUint32(8, FORMAT_VERSION, true);
      preamble.setUint32(12, headerBytes.length, true);
      preamble.setUint32(16, crc32(headerBytes), true);
      await out.write(new Uint8Array(preamble.buffer));
      await out.write(headerBytes);
    } catch (error) {
      await out.abort();
      throw error;
    }
    return new SavedBaselineRecorder(out, absolute, header, baseline);
  }

  private async section(bytes: Uint8Array): Promise<SectionRef> {
    const offset = this.out.bytesWritten;
    await this.out.write(bytes);
    return { offset, bytes: bytes.length, crc32: crc32(bytes) };
  }

  private async recordTokens(text: string, tokens: Int32Array): Promise<Int32Array> {
    const index = this.textIndex.get(sha256Hex(utf8.encode(text)));
    // Texts outside the header (the probe) and texts already recorded pass through.
    if (index !== undefined && this.footerTexts[index] === undefined) {
      const ref = await this.section(bytesOf(tokens));
      this.footerTexts[index] = { tokens: { ...ref, count: tokens.length }, windows: [], complete: false };
      this.tokensByText.set(tokens, index);
    }
    return tokens;
  }

  private async *recordWindows(tokens: Int32Array, windows: readonly WindowPlan[], options: ScoreWindowsOptions, scores: AsyncGenerator<WindowScore>): AsyncGenerator<WindowScore> {
    const index = this.tokensByText.get(tokens);
    const entry = index === undefined ? undefined : this.footerTexts[index];
    if (entry === undefined || entry.complete || entry.windows.length > 0) {
      yield* scores;
      return;
    }
    const rows = this.header.rows !== null;
    if (rows && options.distributions !== 'full') throw new Error('a saved baseline with rows was asked to record windows without them');
    const vocab = this.header.vocab_size;
    let recorded = 0;
    try {
      for await (const result of scores) {
        // Encoded before it is handed over: with `recycle` the rows are reused once the consumer asks for more.
        entry.windows.push({ ...(await this.section(this.encodeWindow(result, vocab, rows))), start: result.window.start, length: result.window.length, from: result.window.from });
        recorded += 1;
        if (recorded === windows.length) entry.complete = true;
        yield result;
      }
      entry.complete = true;
    } finally {
      await scores.return(undefined);
    }
  }

  private encodeWindow(result: WindowScore, vocab: number, rows: boolean): Uint8Array {
    const scored = result.score.tokenLogProbs.length;
    const bytes = windowRecordBytes(scored, vocab, rows);
    if (this.buffer.byteLength < bytes) this.buffer = new ArrayBuffer(bytes);
    let at = 0;
    const take = <T>(make: (buffer: ArrayBuffer, offset: number, length: number) => T, length: number, width: number): T => {
      const view = make(this.buffer, at, length);
      at += length * width;
      return view;
    };
    take((b, o, n) => new Float64Array(b, o, n), scored, 8).set(result.score.tokenLogProbs);
    if (rows) {
      const full = result.score.full;
      if (full === undefined || full.length < scored * vocab) throw new Error('the baseline returned no next-token rows to save');
      const offsets = take((b, o, n) => new Float64Array(b, o, n), scored, 8);
      const steps = take((b, o, n) => new Float64Array(b, o, n), scored, 8);
      take((b, o, n) => new Int32Array(b, o, n), scored, 4).set(result.score.argmax);
      encodeRows(full, scored, vocab, offsets, steps, take((b, o, n) => new Uint16Array(b, o, n), scored * vocab, 2));
    } else {
      take((b, o, n) => new Int32Array(b, o, n), scored, 4).set(result.score.argmax);
    }
    return new Uint8Array(this.buffer, 0, bytes);
  }

  private async recordKobest(options: KobestRunOptions, report: KobestReport): Promise<KobestReport> {
    if (this.header.kobest !== null && this.kobestRef === null) {
      if (report.maxLength !== this.header.kobest.max_length || (options.split ?? 'test') !== this.header.kobest.split) {
        throw new Error(`the baseline's KOBEST ran at max_length ${report.maxLength} on ${options.split}, not ${this.header.kobest.max_length} on ${this.header.kobest.split}`);
      }
      this.kobestRef = await this.section(utf8.encode(JSON.stringify(report, jsonReplacer)));
    }
    return report;
  }

  /** Writes the footer and renames the file into place; returns the baseline's description with the file noted. */
  async commit(): Promise<ModelDescription> {
    const texts = this.footerTexts.map((entry, index) => {
      if (entry === undefined || !entry.complete) throw new Error(`the saved baseline's text ${this.header.texts[index]?.file} was not scored to the end`);
      return { tokens: entry.tokens, windows: entry.windows };
    });
    if (this.header.kobest !== null && this.kobestRef === null) throw new Error("the saved baseline's KOBEST results were not recorded");
    const footer: Footer = { texts, kobest: this.kobestRef };
    const footerBytes = utf8.encode(JSON.stringify(footer));
    const trailer = new DataView(new ArrayBuffer(TRAILER_BYTES));
    trailer.setUint32(0, footerBytes.length, true);
    trailer.setUint32(4, crc32(footerBytes), true);
    utf8.encodeInto(END_MAGIC, new Uint8Array(trailer.buffer, 8, 8));
    await this.out.write(footerBytes);
    await this.out.write(new Uint8Array(trailer.buffer));
    const bytes = this.out.bytesWritten;
    await this.out.commit();
    const note: SavedBaselineNote = { file: this.file, role: 'written', schema: SAVED_BASELINE_SCHEMA, created: this.header.created, polyquant_version: this.header.polyquant_version, bytes };
    return { ...this.inner.description, saved_baseline: note };
  }

  /** Removes the temp file (nothing is left when the run fails). */
  async abort(): Promise<void> {
    await this.out.abort();
  }
}

// ————————————————————————————————————————————————— reading —————————————————————————————————————————————————

function malformed(file: string, detail: string): PolyquantError {
  return new PolyquantError(ERROR_CODES.MALFORMED, `the saved baseline ${detail}`, {
    file,
    hint: 'the file is damaged or was not written by polyquant verify --save-baseline; save the baseline again',
  });
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
const isHex64 = (value: unknown): value is string => typeof value === 'string' && /^[0-9a-f]{64}$/.test(value);

function parseJson(file: string, bytes: Uint8Array, what: string): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw malformed(file, `${what} is not valid UTF-8`);
  }
  try {
    return JSON.parse(text, jsonReviver) as unknown;
  } catch (error) {
    throw malformed(file, `${what} is not valid JSON (${(error as Error).message})`);
  }
}

/** Checks the header's fields (the types every later step relies on). */
function checkHeader(file: string, value: unknown): SavedBaselineHeader {
  const bad = (field: string): PolyquantError => malformed(file, `header field ${field} is missing or invalid`);
  if (!isRecord(value)) throw bad('(the header is not an object)');
  if (value['schema'] !== SAVED_BASELINE_SCHEMA) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the saved baseline has schema ${JSON.stringify(value['schema'])}; this polyquant reads ${SAVED_BASELINE_SCHEMA}`, { file });
  }
  for (const field of ['created', 'polyquant_version'] as const) if (typeof value[field] !== 'string') throw bad(field);
  const baseline = value['baseline'];
  if (!isRecord(baseline) || typeof baseline['path'] !== 'string' || typeof baseline['engine'] !== 'string' || typeof baseline['device'] !== 'string') throw bad('baseline');
  for (const field of ['vocab_size', 'context_length'] as const) if (!isCount(value[field]) || (value[field] as number) < 1) throw bad(field);
  const tokenizer = value['tokenizer'];
  if (!isRecord(tokenizer) || !isCount(tokenizer['probe_tokens']) || !isHex64(tokenizer['probe_sha256'])) throw bad('tokenizer');
  const perplexity = value['perplexity'];
  if (perplexity !== null) {
    if (!isRecord(perplexity)) throw bad('perplexity');
    if (!isCount(perplexity['ctx']) || (perplexity['ctx'] as number) < 2) throw bad('perplexity.ctx');
    if (!(PERPLEXITY_PROTOCOLS as readonly unknown[]).includes(perplexity['protocol'])) throw bad('perplexity.protocol');
    if (perplexity['stride'] !== null && !isCount(perplexity['stride'])) throw bad('perplexity.stride');
    if (perplexity['max_windows'] !== null && !isCount(perplexity['max_windows'])) throw bad('perplexity.max_windows');
    if (typeof perplexity['kld'] !== 'boolean') throw bad('perplexity.kld');
  }
  const texts = value['texts'];
  if (!Array.isArray(texts) || !texts.every((text) => isRecord(text) && typeof text['file'] === 'string' && isHex64(text['sha256']) && isCount(text['bytes']))) throw bad('texts');
  if ((perplexity === null) !== (texts.length === 0)) throw bad('perplexity (texts without settings, or settings without texts)');
  const rows = value['rows'];
  const rowsExpected = isRecord(perplexity) && perplexity['kld'] === true;
  if (rowsExpected ? !isRecord(rows) || rows['encoding'] !== 'u16-log-prob' : rows !== null) throw bad('rows');
  const kobest = value['kobest'];
  if (kobest !== null) {
    if (!isRecord(kobest)) throw bad('kobest');
    if (!(KOBEST_SPLITS as readonly unknown[]).includes(kobest['split'])) throw bad('kobest.split');
    if (kobest['limit'] !== null && !(typeof kobest['limit'] === 'number' && kobest['limit'] > 0)) throw bad('kobest.limit');
    const tasks = kobest['tasks'];
    if (!Array.isArray(tasks) || tasks.length === 0 || !tasks.every((task) => typeof task === 'string' && isKobestTaskName(task))) throw bad('kobest.tasks');
    if (!Array.isArray(kobest['shots']) || kobest['shots'].length === 0 || !kobest['shots'].every(isCount)) throw bad('kobest.shots');
    if (!isCount(kobest['max_length']) || (kobest['max_length'] as number) < 1) throw bad('kobest.max_length');
    const data = kobest['data'];
    if (!isRecord(data) || !tasks.every((task: string) => isRecord(data[task]) && isHex64(data[task]['sha256']) && (data[task]['train_sha256'] === null || isHex64(data[task]['train_sha256'])))) {
      throw bad('kobest.data');
    }
  }
  return value as unknown as SavedBaselineHeader;
}

const isSection = (value: unknown): value is SectionRef =>
  isRecord(value) && isCount(value['offset']) && isCount(value['bytes']) && isCount(value['crc32']) && (value['crc32'] as number) <= 0xffffffff;

/** Checks the footer against the header: sections tile [start, end) in order; each has the size its contents imply. */
function checkFooter(file: string, value: unknown, header: SavedBaselineHeader, start: number, end: number): Footer {
  const bad = (detail: string): PolyquantError => malformed(file, `footer ${detail}`);
  if (!isRecord(value) || !Array.isArray(value['texts'])) throw bad('is not an object with a texts list');
  const texts = value['texts'] as unknown[];
  if (texts.length !== header.texts.length) throw bad(`lists ${texts.length} texts; the header ${header.texts.length}`);
  let next = start;
  const place = (section: SectionRef, what: string, bytes: number): void => {
    if (section.offset !== next) throw bad(`puts ${what} at byte ${section.offset}; the previous section ends at byte ${next} (sections must follow each other without gaps or overlaps)`);
    if (section.bytes !== bytes) throw bad(`gives ${what} ${section.bytes} bytes; its contents need ${bytes}`);
    if (section.offset + section.bytes > end) throw bad(`puts ${what} past the footer (byte ${section.offset + section.bytes} > ${end})`);
    next = section.offset + section.bytes;
  };
  const rows = header.rows !== null;
  texts.forEach((text, t) => {
    if (!isRecord(text) || !isSection(text['tokens']) || !isCount((text['tokens'] as unknown as Record<string, unknown>)['count']) || !Array.isArray(text['windows'])) {
      throw bad(`entry of text ${t} is invalid`);
    }
    const tokens = text['tokens'] as SectionRef & { count: number };
    place(tokens, `text ${t}'s tokens`, tokens.count * 4);
    (text['windows'] as unknown[]).forEach((window, w) => {
      if (!isSection(window) || !isCount((window as unknown as WindowRef).start) || !isCount((window as unknown as WindowRef).length) || !isCount((window as unknown as WindowRef).from)) {
        throw bad(`entry of text ${t} window ${w} is invalid`);
      }
      const { start: first, length, from } = window as WindowRef;
      if (from < 1 || from >= length || first + length > tokens.count) throw bad(`window ${w} of text ${t} (start ${first}, length ${length}, from ${from}) does not fit its ${tokens.count} tokens`);
      place(window, `text ${t} window ${w}`, windowRecordBytes(length - from, header.vocab_size, rows));
    });
  });
  const kobest = value['kobest'];
  if ((kobest === null) !== (header.kobest === null) || (kobest !== null && !isSection(kobest))) throw bad('kobest entry is invalid or does not match the header');
  if (kobest !== null) {
    if (kobest.bytes > MAX_KOBEST_BYTES) throw bad(`gives the KOBEST section ${kobest.bytes} bytes, over the ${MAX_KOBEST_BYTES}-byte limit`);
    place(kobest, 'the KOBEST results', kobest.bytes);
  }
  if (next !== end) throw bad(`accounts for bytes up to ${next}; the footer starts at ${end} (unaccounted bytes)`);
  return value as unknown as Footer;
}

/** Checks the saved KOBEST report's shape (the fields the comparison and the report read). */
function checkKobestReport(file: string, value: unknown): KobestReport {
  const bad = (detail: string): PolyquantError => malformed(file, `KOBEST section ${detail}`);
  const isNumber = (field: unknown): boolean => typeof field === 'number';
  if (!isRecord(value) || !Array.isArray(value['results']) || !isCount(value['maxLength'])) throw bad('is not a KOBEST report');
  (value['results'] as unknown[]).forEach((result, r) => {
    if (!isRecord(result) || typeof result['task'] !== 'string' || !isKobestTaskName(result['task']) || typeof result['harnessName'] !== 'string' || typeof result['split'] !== 'string' || typeof result['file'] !== 'string') {
      throw bad(`result ${r} is invalid`);
    }
    for (const field of ['shots', 'n', 'truncated'] as const) if (!isCount(result[field])) throw bad(`result ${r} field ${field} is invalid`);
    for (const field of ['acc', 'acc_stderr', 'macro_f1'] as const) if (!isNumber(result[field])) throw bad(`result ${r} field ${field} is invalid`);
    for (const field of ['acc_norm', 'acc_norm_stderr'] as const) if (result[field] !== undefined && !isNumber(result[field])) throw bad(`result ${r} field ${field} is invalid`);
    const documents = result['documents'];
    if (!Array.isArray(documents) || documents.length !== result['n']) throw bad(`result ${r} documents are invalid`);
    documents.forEach((document: unknown, d: number) => {
      const ok =
        isRecord(document) &&
        isCount(document['index']) &&
        isCount(document['idx']) &&
        isCount(document['gold']) &&
        isCount(document['pred']) &&
        (document['predNorm'] === undefined || isCount(document['predNorm'])) &&
        Array.isArray(document['logLikelihoods']) &&
        document['logLikelihoods'].every(isNumber) &&
        Array.isArray(document['fewshotIdx']) &&
        document['fewshotIdx'].every(isCount) &&
        typeof document['truncated'] === 'boolean';
      if (!ok) throw bad(`result ${r} document ${d} is invalid`);
    });
  });
  return value as unknown as KobestReport;
}

/** A saved-baseline file, opened and checked (header, footer, layout); sections are read as they are asked for. */
export class SavedBaselineFile {
  private constructor(
    readonly path: string,
    readonly header: SavedBaselineHeader,
    private readonly footer: Footer,
    private readonly handle: ReadableFile,
  ) {}

  get size(): number {
    return this.handle.size;
  }

  static async open(path: string): Promise<SavedBaselineFile> {
    requireLittleEndian();
    const file = resolve(path);
    const handle = await ReadableFile.open(file);
    try {
      const size = handle.size;
      if (size < PREAMBLE_BYTES + TRAILER_BYTES) throw malformed(file, `is ${size} bytes, shorter than the ${PREAMBLE_BYTES + TRAILER_BYTES} bytes of an empty one`);
      const preamble = await handle.read(0, PREAMBLE_BYTES);
      const view = new DataView(preamble.buffer, preamble.byteOffset, PREAMBLE_BYTES);
      if (new TextDecoder().decode(preamble.subarray(0, 8)) !== MAGIC) throw malformed(file, `does not start with ${JSON.stringify(MAGIC)}`);
      const version = view.getUint32(8, true);
      if (version !== FORMAT_VERSION) {
        throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the saved baseline is format version ${version}; this polyquant reads version ${FORMAT_VERSION}`, { file, hint: 'save the baseline again with this polyquant' });
      }
      const headerLength = view.getUint32(12, true);
      if (headerLength > MAX_HEADER_BYTES) throw malformed(file, `header is ${headerLength} bytes, over the ${MAX_HEADER_BYTES}-byte limit`);
      if (PREAMBLE_BYTES + headerLength + TRAILER_BYTES > size) throw malformed(file, `header of ${headerLength} bytes does not fit the file's ${size} bytes (truncated?)`);
      const headerBytes = await handle.read(PREAMBLE_BYTES, headerLength);
      if (crc32(headerBytes) !== view.getUint32(16, true)) throw malformed(file, 'header fails its CRC-32 check');
      const header = checkHeader(file, parseJson(file, headerBytes, 'header'));
      const trailer = await handle.read(size - TRAILER_BYTES, TRAILER_BYTES);
      const tail = new DataView(trailer.buffer, trailer.byteOffset, TRAILER_BYTES);
      if (new TextDecoder().decode(trailer.subarray(8)) !== END_MAGIC) throw malformed(file, `does not end with ${JSON.stringify(END_MAGIC)} (truncated, or still being written?)`);
      const footerLength = tail.getUint32(0, true);
      const footerStart = size - TRAILER_BYTES - footerLength;
      if (footerLength > MAX_FOOTER_BYTES) throw malformed(file, `footer is ${footerLength} bytes, over the ${MAX_FOOTER_BYTES}-byte limit`);
      if (footerStart < PREAMBLE_BYTES + headerLength) throw malformed(file, `footer of ${footerLength} bytes overlaps the header`);
      const footerBytes = await handle.read(footerStart, footerLength);
      if (crc32(footerBytes) !== tail.getUint32(4, true)) throw malformed(file, 'footer fails its CRC-32 check');
      const footer = checkFooter(file, parseJson(file, footerBytes, 'footer'), header, PREAMBLE_BYTES + headerLength, footerStart);
      return new SavedBaselineFile(file, header, footer, handle);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /** A section's bytes, CRC-checked. */
  async read(section: SectionRef, what: string, into?: Uint8Array): Promise<Uint8Array> {
    const bytes = await this.handle.read(section.offset, section.bytes, into);
    if (crc32(bytes.subarray(0, section.bytes)) !== section.crc32) throw malformed(this.path, `${what} (bytes ${section.offset}–${section.offset + section.bytes}) fails its CRC-32 check`);
    return bytes;
  }

  text(index: number): { tokens: SectionRef & { count: number }; windows: readonly WindowRef[] } {
    return this.footer.texts[index] as Footer['texts'][number];
  }

  get kobest(): SectionRef | null {
    return this.footer.kobest;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/** A refusal: the later run asks for something the saved baseline was not made for. */
function mismatch(file: string, detail: string, hint: string): PolyquantError {
  return new PolyquantError(ERROR_CODES.USAGE, `the saved baseline does not match this run: ${detail}`, { file, hint });
}

/**
 * Checks a verify run's settings and inputs against a saved baseline (before any model loads): every
 * difference is named in one message.
 */
async function checkRun(saved: SavedBaselineFile, options: VerifyOptions, kobestInputs: KobestInputs | undefined): Promise<Map<string, number>> {
  const { header, path } = saved;
  const textIndex = new Map<string, number>();
  const pplFiles = options.pplFiles ?? [];
  if (pplFiles.length > 0) {
    if (header.perplexity === null) throw mismatch(path, 'it holds no perplexity texts (it was saved without --ppl)', 'save a baseline with the --ppl texts, or drop --ppl');
    const wanted = perplexitySettings(options);
    const differences: string[] = [];
    if (wanted.ctx !== header.perplexity.ctx) differences.push(`--ctx ${wanted.ctx} (saved with ${header.perplexity.ctx})`);
    if (wanted.protocol !== header.perplexity.protocol) differences.push(`--protocol ${wanted.protocol} (saved with ${header.perplexity.protocol})`);
    else if (wanted.stride !== header.perplexity.stride) differences.push(`--stride ${wanted.stride} (saved with ${header.perplexity.stride})`);
    if (wanted.max_windows !== header.perplexity.max_windows) {
      const flag = (value: number | null): string => (value === null ? 'no --max-windows' : `--max-windows ${value}`);
      differences.push(`${flag(wanted.max_windows)} (saved with ${flag(header.perplexity.max_windows).replace('--max-windows ', '')})`);
    }
    if (wanted.kld && !header.perplexity.kld) differences.push('KL divergence (saved with --no-kld: it holds no next-token distributions)');
    for (const file of pplFiles) {
      const text = await readTextFile(file);
      const sha256 = sha256Hex(utf8.encode(text.text));
      const index = header.texts.findIndex((saved) => saved.sha256 === sha256);
      if (index < 0) differences.push(`text ${text.file} (sha256 ${sha256.slice(0, 16)}…) is not one it was saved with`);
      else textIndex.set(sha256, index);
    }
    if (differences.length > 0) {
      throw mismatch(
        path,
        differences.join('; '),
        `it was saved with ${header.texts.map((text) => `--ppl ${text.file}`).join(' ')} --ctx ${header.perplexity.ctx} --protocol ${header.perplexity.protocol}${header.perplexity.stride === null ? '' : ` --stride ${header.perplexity.stride}`}${header.perplexity.max_windows === null ? '' : ` --max-windows ${header.perplexity.max_windows}`}${header.perplexity.kld ? '' : ' --no-kld'}; run with those, or save a new baseline with --save-baseline`,
      );
    }
  }
  if (options.kobestDir !== undefined && kobestInputs !== undefined) {
    const kobest = header.kobest;
    if (kobest === null) throw mismatch(path, 'it holds no KOBEST results (it was saved without --kobest)', 'save a baseline with --kobest, or drop --kobest');
    const differences: string[] = [];
    const split = options.split ?? 'test';
    if (split !== kobest.split) differences.push(`--split ${split} (saved with ${kobest.split})`);
    if ((options.limit ?? null) !== kobest.limit) {
      const flag = (value: number | null | undefined): string => (value === null || value === undefined ? 'no --limit' : `--limit ${value}`);
      differences.push(`${flag(options.limit)} (saved with ${flag(kobest.limit).replace('--limit ', '')})`);
    }
    for (const shots of options.shots ?? [0]) if (!kobest.shots.includes(shots)) differences.push(`--shots ${shots} (saved with ${kobest.shots.join(',')})`);
    const data = kobestData(kobestInputs);
    for (const [task, hashes] of Object.entries(data)) {
      const savedData = kobest.data[task];
      if (savedData === undefined) {
        differences.push(`task ${task} (saved with ${kobest.tasks.join(',')})`);
        continue;
      }
      const evaluated = kobestInputs.get(task as KobestTaskName)?.evaluated.file;
      if (hashes.sha256 !== savedData.sha256) differences.push(`the ${task} ${split} documents in ${evaluated} differ from the saved ones`);
      if (hashes.train_sha256 !== null && savedData.train_sha256 !== null && hashes.train_sha256 !== savedData.train_sha256) differences.push(`the ${task} train documents (few-shot examples) differ from the saved ones`);
    }
    if (differences.length > 0) {
      throw mismatch(
        path,
        differences.join('; '),
        `it was saved with --tasks ${kobest.tasks.join(',')} --shots ${kobest.shots.join(',')} --split ${kobest.split}${kobest.limit === null ? '' : ` --limit ${kobest.limit}`} on the same KOBEST data; run with those (or a subset of the tasks and shots), or save a new baseline`,
      );
    }
  }
  return textIndex;
}

/**
 * The baseline side of a verify run whose `baseline` is a saved-baseline file: checked against the run's
 * settings and inputs now, and against the candidate (`checkCandidate`) once it is loaded. No model loads.
 */
export async function openSavedBaseline(options: VerifyOptions, kobestInputs: KobestInputs | undefined): Promise<OpenedBaseline & { checkCandidate(engine: Engine): void }> {
  const saved = await SavedBaselineFile.open(options.baseline);
  try {
    if (options.saveBaseline !== undefined) {
      throw new PolyquantError(ERROR_CODES.USAGE, '--save-baseline saves the baseline model of a run, and --baseline is already a saved baseline', {
        file: saved.path,
        hint: 'copy the file instead, or give the baseline model as --baseline',
      });
    }
    const textIndex = await checkRun(saved, options, kobestInputs);
    const { header } = saved;
    const note: SavedBaselineNote = { file: saved.path, role: 'read', schema: header.schema, created: header.created, polyquant_version: header.polyquant_version, bytes: saved.size };
    const source = savedSource(saved, textIndex);
    return {
      source,
      description: { ...header.baseline, saved_baseline: note },
      close: () => saved.close(),
      checkCandidate: (engine) => checkCandidate(saved, engine, options),
    };
  } catch (error) {
    await saved.close();
    throw error;
  }
}

/** Refuses a candidate the saved baseline cannot be compared with: another vocabulary, tokenizer or KOBEST max_length. */
function checkCandidate(saved: SavedBaselineFile, engine: Engine, options: VerifyOptions): void {
  const { header, path } = saved;
  if (engine.vocabSize !== header.vocab_size) {
    throw new PolyquantError(ERROR_CODES.CONFIG, `the candidate has ${engine.vocabSize} vocabulary rows; the saved baseline ${header.vocab_size}`, {
      file: path,
      hint: 'a saved baseline compares only models of the same vocabulary',
    });
  }
  const probe = engine.tokenize(TOKENIZER_PROBE);
  if (probe.length !== header.tokenizer.probe_tokens || sha256Hex(bytesOf(probe)) !== header.tokenizer.probe_sha256) {
    throw new PolyquantError(
      ERROR_CODES.CONFIG,
      `the candidate's tokenizer differs from the saved baseline's: it splits the probe text (saved-baseline.ts TOKENIZER_PROBE) into ${probe.length} tokens${probe.length === header.tokenizer.probe_tokens ? ' with other ids' : `, the baseline's into ${header.tokenizer.probe_tokens}`}`,
      { file: path, hint: 'both models must share a tokenizer for a token-level comparison' },
    );
  }
  if (options.kobestDir !== undefined && header.kobest !== null) {
    const maxLength = Math.min(header.context_length, engine.contextLength);
    if (maxLength !== header.kobest.max_length) {
      throw new PolyquantError(
        ERROR_CODES.USAGE,
        `the saved baseline's KOBEST results were scored with max_length ${header.kobest.max_length}; with this candidate's context of ${engine.contextLength} tokens the comparison needs ${maxLength}`,
        { file: path, hint: 'save the baseline again against a candidate with this context length' },
      );
    }
  }
}

/** The BaselineSource of a checked saved baseline: tokens, windows and KOBEST results read from the file. */
function savedSource(saved: SavedBaselineFile, textIndex: ReadonlyMap<string, number>): BaselineSource {
  const { header, path } = saved;
  const tokensOf = new WeakMap<Int32Array, number>();
  return {
    vocabSize: header.vocab_size,
    contextLength: header.context_length,
    async tokenize(text) {
      const index = textIndex.get(sha256Hex(utf8.encode(text)));
      if (index === undefined) throw new PolyquantError(ERROR_CODES.USAGE, 'the saved baseline was asked for a text it was not checked for', { file: path });
      const ref = saved.text(index).tokens;
      const tokens = new Int32Array(ref.count);
      await saved.read(ref, `text ${index}'s tokens`, bytesOf(tokens));
      tokensOf.set(tokens, index);
      return tokens;
    },
    scoreWindows: (tokens, windows, options) => readWindows(saved, tokensOf.get(tokens), tokens, windows, options),
    runKobest: (options) => readKobest(saved, options),
  };
}

async function* readWindows(saved: SavedBaselineFile, index: number | undefined, tokens: Int32Array, windows: readonly WindowPlan[], options: ScoreWindowsOptions): AsyncGenerator<WindowScore> {
  const { header, path } = saved;
  if (index === undefined) throw new PolyquantError(ERROR_CODES.USAGE, 'the saved baseline was asked to score tokens it did not give', { file: path });
  const recorded = saved.text(index).windows;
  const full = options.distributions === 'full';
  if (full && header.rows === null) throw mismatch(path, 'it holds no next-token distributions (it was saved with --no-kld)', 'add --no-kld');
  if (windows.length !== recorded.length || windows.some((window, w) => window.start !== recorded[w]?.start || window.length !== recorded[w]?.length || window.from !== recorded[w]?.from)) {
    throw mismatch(path, `the windows of text ${header.texts[index]?.file} differ from the saved ones`, 'use the --ctx, --protocol, --stride and --max-windows it was saved with');
  }
  const vocab = header.vocab_size;
  const rows = header.rows !== null;
  let buffer = new ArrayBuffer(0);
  let spare: Float32Array | undefined;
  for (let w = 0; w < windows.length; w += 1) {
    const window = windows[w] as WindowPlan;
    const ref = recorded[w] as WindowRef;
    const scored = window.length - window.from;
    if (buffer.byteLength < ref.bytes) buffer = new ArrayBuffer(ref.bytes);
    await saved.read(ref, `window ${w} of text ${index}`, new Uint8Array(buffer, 0, ref.bytes));
    // Copies of the scalars (the consumer may keep them); the rows go into one reused buffer with `recycle`.
    const tokenLogProbs = new Float64Array(buffer, 0, scored).slice();
    const argmaxAt = scored * (rows ? 24 : 8);
    const argmax = new Int32Array(buffer, argmaxAt, scored).slice();
    let decoded: Float32Array | undefined;
    if (full) {
      const size = scored * vocab;
      decoded = options.recycle === true && spare !== undefined && spare.length >= size ? spare.subarray(0, size) : new Float32Array(size);
      if (options.recycle === true && (spare === undefined || spare.length < size)) spare = decoded;
      decodeRows(new Float64Array(buffer, scored * 8, scored), new Float64Array(buffer, scored * 16, scored), new Uint16Array(buffer, argmaxAt + scored * 4, size), scored, vocab, decoded);
    }
    let logLikelihood = 0;
    for (const value of tokenLogProbs) logLikelihood += value;
    yield {
      window,
      tokens: tokens.slice(window.start, window.start + window.length),
      score: { tokenLogProbs, argmax, ...(decoded !== undefined && { full: decoded }) },
      nll: -logLikelihood,
    };
  }
}

async function readKobest(saved: SavedBaselineFile, options: KobestRunOptions): Promise<KobestReport> {
  const { header, path } = saved;
  const ref = saved.kobest;
  if (header.kobest === null || ref === null) throw mismatch(path, 'it holds no KOBEST results', 'drop --kobest');
  if (options.maxLength !== undefined && options.maxLength !== header.kobest.max_length) {
    throw mismatch(path, `its KOBEST results were scored with max_length ${header.kobest.max_length}, not ${options.maxLength}`, 'save the baseline again against this candidate');
  }
  const report = checkKobestReport(path, parseJson(path, await saved.read(ref, 'the KOBEST results'), 'KOBEST section'));
  // verify passes no tasks for all five, as runKobest takes them.
  const tasks = options.tasks ?? KOBEST_TASK_NAMES;
  const shots = options.shots ?? [0];
  // In the order runKobest gives them: by task, then by shot count.
  const results = tasks.flatMap((task) =>
    shots.map((count) => {
      const result = report.results.find((candidate) => candidate.task === task && candidate.shots === count);
      if (result === undefined) throw mismatch(path, `it holds no KOBEST ${task} ${count}-shot result`, `run with --tasks ${header.kobest?.tasks.join(',')} --shots ${header.kobest?.shots.join(',')}`);
      return result;
    }),
  );
  return { ...report, results };
}
