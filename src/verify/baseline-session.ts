/**
 * A baseline scored once and replayed for every candidate (what `sweep` hands to each cell's verify):
 * the baseline's tokens, each window's target log-probabilities and argmax, its full next-token rows (for
 * KL divergence) and its KOBEST results are recorded the first time a comparison asks for them, and every
 * later comparison reads them back instead of running the baseline engine again. The numbers are the
 * engine's own, stored as they came (float64 log-probabilities, int32 argmax, float32 rows), so a replayed
 * comparison is the comparison verify makes with the engine, bit for bit.
 *
 * Memory is bounded the way verify bounds it: rows are never held beyond the window being compared (one
 * reusable buffer of ctx × vocabulary floats). They live on disk, under `dir`, up to `maxRowBytes` in
 * all: a window whose rows would pass the limit is recorded without them (and so is every later window of
 * that text), and each comparison rescores those windows with the baseline engine, which then stays
 * loaded for the session. Everything else (tokens, per-position scalars, KOBEST log-likelihoods) is
 * O(text length) and always kept.
 *
 * Entries are named by `key` (the caller's digest of the model's content, the engine settings and the
 * polyquant version) plus the request (the tokens' hash, the windows, the distributions; KOBEST's data,
 * tasks, shots, split, limit and max_length), so a later process with the same key replays them too — a
 * resumed sweep does not score its baseline again — and one with another key never reads them. Files are
 * written under temp names and renamed (io/file.ts AtomicFile); an entry's JSON goes last and is the
 * mark that its data file is complete. Two processes writing one entry write the same bytes.
 */
import { createHash } from 'node:crypto';
import { type FileHandle, mkdir, open, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { AtomicFile, ioError, writeAtomically } from '../io/file.js';
import type { BaselineSource } from './baseline-source.js';
import { type KobestReport, type KobestRunOptions, runKobest } from './kobest/index.js';
import { type ScoreWindowsOptions, scoreWindows, type WindowPlan, type WindowScore } from './perplexity.js';
import type { ModelDescription } from './report.js';
import { type LoadedModel, loadModel, type ModelPlan, planModel, type VerifyOptions, type VerifyProgress } from './verify.js';

/** Default bound on the full rows kept on disk: 2 GiB (≈ 35 windows of 512 tokens over a 30080-token vocabulary). */
export const DEFAULT_MAX_ROW_BYTES = 2 ** 31;
const SESSION_SCHEMA = 'polyquant.baseline-session/1';
const WINDOWS_SCHEMA = 'polyquant.baseline-windows/1';
const KOBEST_SCHEMA = 'polyquant.baseline-kobest/1';
/** Length of the hex names of entry files (128 bits of sha256). */
const NAME_HEX = 32;

export interface BaselineSessionOptions {
  /** The baseline model, as verify takes it. */
  readonly baseline: string;
  /**
   * The options every comparison will pass to verify: their engine settings (engine, device, threads,
   * cacheDir, baselineType, ctx, kobestDir, onnxType) decide how the baseline loads.
   */
  readonly verify: Omit<VerifyOptions, 'candidate' | 'baseline' | 'baselineSession'>;
  /** Where entries are kept (created when needed). */
  readonly dir: string;
  /**
   * Names this baseline and its engine settings: entries made under another key are never read. It must
   * change whenever anything that changes the baseline's numbers does (the model's content, the engine
   * and its settings, the polyquant version).
   */
  readonly key: string;
  /** Largest total of full rows kept on disk, in bytes (default DEFAULT_MAX_ROW_BYTES; 0 keeps none). */
  readonly maxRowBytes?: number;
}

/** What a session did, for reports and benchmarks. */
export interface BaselineSessionStats {
  /** Times the baseline engine was loaded. */
  engineLoads: number;
  /** Windows the baseline engine scored (recording, or rescoring windows without kept rows). */
  windowsScored: number;
  /** Windows read back from disk. */
  windowsReplayed: number;
  /** Bytes of full rows kept on disk. */
  rowBytes: number;
  kobestScored: number;
  kobestReplayed: number;
}

interface SessionMeta {
  readonly vocabSize: number;
  readonly contextLength: number;
  readonly description: ModelDescription;
}

/** One recorded text: where each window's numbers sit in the data file. */
interface WindowsEntry {
  readonly vocab: number;
  readonly bytes: number;
  readonly windows: readonly { readonly scored: number; readonly offset: number; readonly rows: boolean }[];
}

const sha256 = (...parts: (string | Uint8Array)[]): string => {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part).update('\0');
  return hash.digest('hex');
};

const bytesOf = (array: Float64Array | Int32Array | Float32Array): Uint8Array => new Uint8Array(array.buffer, array.byteOffset, array.byteLength);

async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as unknown;
  } catch {
    // Missing or damaged: the entry is recorded again.
    return undefined;
  }
}

async function readExactly(handle: FileHandle, into: Uint8Array, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await handle.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) throw new PolyquantError(ERROR_CODES.MALFORMED, `the baseline session's data file ended early at byte ${position + done}`, { file });
    done += bytesRead;
  }
}

/** −Σ log p over a window, summed in order as perplexity.ts `scoreWindows` sums it. */
function negativeLogLikelihood(tokenLogProbs: Float64Array): number {
  let logLikelihood = 0;
  for (const value of tokenLogProbs) logLikelihood += value;
  return -logLikelihood;
}

export class BaselineSession {
  readonly stats: BaselineSessionStats = { engineLoads: 0, windowsScored: 0, windowsReplayed: 0, rowBytes: 0, kobestScored: 0, kobestReplayed: 0 };
  private meta: SessionMeta | undefined;
  private loaded: LoadedModel | undefined;
  private loading: Promise<LoadedModel> | undefined;
  /** Some recorded text has windows without rows: comparisons rescore them, so the engine stays loaded. */
  private needsEngine = false;
  private readonly tokens = new Map<string, Int32Array>();
  private readonly windowEntries = new Map<string, WindowsEntry>();
  private readonly kobestEntries = new Map<string, KobestReport>();
  private readonly maxRowBytes: number;
  private readonly name: string;

  private constructor(
    /** The baseline, absolute. */
    readonly baseline: string,
    /** How verify runs it (planned once, before anything loads). */
    readonly plan: ModelPlan,
    private readonly options: BaselineSessionOptions,
  ) {
    this.maxRowBytes = options.maxRowBytes ?? DEFAULT_MAX_ROW_BYTES;
    // The engine verify picked is part of the name: the same key with another engine (threads can decide
    // whether the reference engine fits) must not read this one's numbers.
    this.name = sha256(SESSION_SCHEMA, options.key, plan.engine, String(plan.convert)).slice(0, NAME_HEX);
  }

  /** Plans the baseline as verify would (bad input fails here, before any comparison). Nothing is loaded yet. */
  static async create(options: BaselineSessionOptions): Promise<BaselineSession> {
    const maxRowBytes = options.maxRowBytes ?? DEFAULT_MAX_ROW_BYTES;
    if (!Number.isSafeInteger(maxRowBytes) || maxRowBytes < 0) {
      throw new PolyquantError(ERROR_CODES.USAGE, `the baseline session's row limit is ${maxRowBytes} bytes; expected a non-negative integer`);
    }
    const baseline = resolve(options.baseline);
    const plan = await planModel(baseline, 'baseline', { ...options.verify, baseline }, undefined);
    return new BaselineSession(baseline, plan, options);
  }

  private file(kind: string, suffix: string): string {
    return join(this.options.dir, `${this.name}-${kind}${suffix}`);
  }

  private async write(file: string, bytes: Uint8Array): Promise<void> {
    await mkdir(this.options.dir, { recursive: true }).catch((error: unknown) => {
      throw ioError(this.options.dir, 'create the baseline session folder', error);
    });
    await writeAtomically(file, (out) => out.write(bytes));
  }

  private async engine(onProgress: VerifyOptions['onProgress']): Promise<LoadedModel> {
    if (this.loaded !== undefined) return this.loaded;
    this.loading ??= (async () => {
      const model = await loadModel(this.plan, { ...this.options.verify, baseline: this.baseline, ...(onProgress !== undefined && { onProgress }) }, undefined);
      this.stats.engineLoads += 1;
      this.loaded = model;
      if (this.meta === undefined) {
        this.meta = { vocabSize: model.engine.vocabSize, contextLength: model.engine.contextLength, description: model.description };
        await this.write(this.file('session', '.json'), new TextEncoder().encode(`${JSON.stringify({ schema: SESSION_SCHEMA, key: this.options.key, engine: this.plan.engine, ...this.meta }, null, 2)}\n`));
      }
      return model;
    })().finally(() => {
      this.loading = undefined;
    });
    return this.loading;
  }

  /** The baseline's engine facts, from disk when an earlier process recorded them, else by loading it. */
  private async ensureMeta(onProgress: VerifyOptions['onProgress']): Promise<SessionMeta> {
    if (this.meta !== undefined) return this.meta;
    const stored = (await readJson(this.file('session', '.json'))) as (SessionMeta & { schema?: unknown; key?: unknown; engine?: unknown }) | undefined;
    if (stored?.schema === SESSION_SCHEMA && stored.key === this.options.key && stored.engine === this.plan.engine && Number.isSafeInteger(stored.vocabSize) && Number.isSafeInteger(stored.contextLength)) {
      this.meta = { vocabSize: stored.vocabSize, contextLength: stored.contextLength, description: stored.description };
      return this.meta;
    }
    await this.engine(onProgress);
    return this.meta as unknown as SessionMeta;
  }

  /**
   * The baseline's side for one comparison. `close` of the result releases the engine unless a recorded
   * text still needs it; the session itself stays usable until `close()`.
   */
  async open(onProgress?: (event: VerifyProgress) => void): Promise<{ source: BaselineSource; description: ModelDescription; close(): Promise<void> }> {
    const meta = await this.ensureMeta(onProgress);
    const source: BaselineSource = {
      vocabSize: meta.vocabSize,
      contextLength: meta.contextLength,
      tokenize: (text) => this.tokenize(text, onProgress),
      scoreWindows: (tokens, windows, options) => this.scoreWindows(tokens, windows, options, onProgress),
      runKobest: (options) => this.runKobest(options, onProgress),
    };
    return { source, description: meta.description, close: () => this.release() };
  }

  /** Closes the baseline engine when no recorded text needs it (it loads again if a new request comes). */
  private async release(): Promise<void> {
    if (this.needsEngine || this.loaded === undefined) return;
    const { engine } = this.loaded;
    this.loaded = undefined;
    await engine.close();
  }

  /** Closes the baseline engine. */
  async close(): Promise<void> {
    const loaded = this.loaded ?? (this.loading === undefined ? undefined : await this.loading.catch(() => undefined));
    this.loaded = undefined;
    await loaded?.engine.close();
  }

  private async tokenize(text: string, onProgress: VerifyOptions['onProgress']): Promise<Int32Array> {
    const name = sha256(this.options.key, text).slice(0, NAME_HEX);
    const known = this.tokens.get(name);
    if (known !== undefined) return known;
    const file = this.file(`tokens-${name}`, '.i32');
    const stored = await readFile(file).catch(() => undefined);
    let tokens: Int32Array;
    if (stored !== undefined && stored.length % 4 === 0) {
      tokens = new Int32Array(stored.length / 4);
      bytesOf(tokens).set(stored);
    } else {
      tokens = (await this.engine(onProgress)).engine.tokenize(text);
      await this.write(file, bytesOf(tokens));
    }
    this.tokens.set(name, tokens);
    return tokens;
  }

  private windowsName(tokens: Int32Array, windows: readonly WindowPlan[], full: boolean): string {
    const plan = windows.map((window) => [window.start, window.length, window.from]);
    return sha256(this.options.key, WINDOWS_SCHEMA, sha256(bytesOf(tokens)), JSON.stringify({ plan, full })).slice(0, NAME_HEX);
  }

  private async windowsEntry(name: string, vocab: number, count: number): Promise<WindowsEntry | undefined> {
    const known = this.windowEntries.get(name);
    if (known !== undefined) return known;
    const stored = (await readJson(this.file(`windows-${name}`, '.json'))) as (WindowsEntry & { schema?: unknown }) | undefined;
    if (stored?.schema !== WINDOWS_SCHEMA || stored.vocab !== vocab || !Array.isArray(stored.windows) || stored.windows.length !== count) return undefined;
    const size = await stat(this.file(`windows-${name}`, '.bin')).then((info) => info.size).catch(() => -1);
    if (size !== stored.bytes) return undefined;
    const entry: WindowsEntry = { vocab: stored.vocab, bytes: stored.bytes, windows: stored.windows };
    for (const window of entry.windows) if (window.rows) this.stats.rowBytes += window.scored * vocab * 4;
    this.windowEntries.set(name, entry);
    return entry;
  }

  private scoreWindows(
    tokens: Int32Array,
    windows: readonly WindowPlan[],
    options: ScoreWindowsOptions,
    onProgress: VerifyOptions['onProgress'],
  ): AsyncGenerator<WindowScore> {
    const distributions = options.distributions ?? 'none';
    const self = this;
    // Top-k distributions are not recorded (verify asks for full rows or none).
    if (distributions === 'topk') {
      return (async function* () {
        yield* scoreWindows((await self.engine(onProgress)).engine, tokens, windows, options);
      })();
    }
    const full = distributions === 'full';
    const name = this.windowsName(tokens, windows, full);
    return (async function* () {
      const meta = await self.ensureMeta(onProgress);
      const entry = await self.windowsEntry(name, meta.vocabSize, windows.length);
      if (entry === undefined) yield* self.record(name, tokens, windows, options, full, onProgress);
      else yield* self.replay(name, entry, tokens, windows, options, full, onProgress);
    })();
  }

  /** Scores the windows with the engine, yielding each as verify would get it, and records them. */
  private async *record(
    name: string,
    tokens: Int32Array,
    windows: readonly WindowPlan[],
    options: ScoreWindowsOptions,
    full: boolean,
    onProgress: VerifyOptions['onProgress'],
  ): AsyncGenerator<WindowScore> {
    const { engine } = await this.engine(onProgress);
    await mkdir(this.options.dir, { recursive: true }).catch((error: unknown) => {
      throw ioError(this.options.dir, 'create the baseline session folder', error);
    });
    const data = await AtomicFile.create(this.file(`windows-${name}`, '.bin'));
    const table: { scored: number; offset: number; rows: boolean }[] = [];
    let keepRows = full;
    let complete = false;
    const finish = async (): Promise<void> => {
      complete = true;
      await data.commit();
      const entry: WindowsEntry = { vocab: engine.vocabSize, bytes: data.bytesWritten, windows: table };
      await this.write(this.file(`windows-${name}`, '.json'), new TextEncoder().encode(`${JSON.stringify({ schema: WINDOWS_SCHEMA, ...entry })}\n`));
      this.windowEntries.set(name, entry);
      if (full && table.some((window) => !window.rows)) this.needsEngine = true;
    };
    try {
      if (windows.length === 0) await finish();
      for await (const result of scoreWindows(engine, tokens, windows, options)) {
        this.stats.windowsScored += 1;
        const { score } = result;
        const scored = score.tokenLogProbs.length;
        const offset = data.bytesWritten;
        await data.write(bytesOf(score.tokenLogProbs));
        await data.write(bytesOf(score.argmax));
        const rowBytes = scored * engine.vocabSize * 4;
        // Rows are kept for a prefix of the windows: once one would pass the limit, none after it is.
        keepRows &&= score.full !== undefined && this.stats.rowBytes + rowBytes <= this.maxRowBytes;
        if (keepRows && score.full !== undefined) {
          await data.write(bytesOf(score.full.subarray(0, scored * engine.vocabSize)));
          this.stats.rowBytes += rowBytes;
        }
        table.push({ scored, offset, rows: keepRows });
        // The entry is complete before its last window is handed over: a consumer that stops asking after
        // the last window (verify takes exactly as many as it planned) never resumes this generator.
        if (table.length === windows.length) await finish();
        yield result;
      }
    } finally {
      if (!complete) await data.abort();
    }
  }

  /** Reads recorded windows back; windows recorded without their rows are rescored by the engine. */
  private async *replay(
    name: string,
    entry: WindowsEntry,
    tokens: Int32Array,
    windows: readonly WindowPlan[],
    options: ScoreWindowsOptions,
    full: boolean,
    onProgress: VerifyOptions['onProgress'],
  ): AsyncGenerator<WindowScore> {
    const file = this.file(`windows-${name}`, '.bin');
    let handle: FileHandle;
    try {
      handle = await open(file, 'r');
    } catch (error) {
      throw ioError(file, "read the baseline session's recorded windows", error);
    }
    let rescored: AsyncGenerator<WindowScore> | undefined;
    /** With `recycle`, one buffer serves every window: the consumer is done with a window when it asks for the next. */
    let rows: Float32Array | undefined;
    try {
      for (let index = 0; index < windows.length; index += 1) {
        const window = windows[index] as WindowPlan;
        const recorded = entry.windows[index] as WindowsEntry['windows'][number];
        if (full && !recorded.rows) {
          this.needsEngine = true;
          rescored ??= scoreWindows((await this.engine(onProgress)).engine, tokens, windows.slice(index), options);
          const next = await rescored.next();
          if (next.done === true) throw new Error('the rescored baseline stream ended early');
          this.stats.windowsScored += 1;
          yield next.value;
          continue;
        }
        const tokenLogProbs = new Float64Array(recorded.scored);
        const argmax = new Int32Array(recorded.scored);
        await readExactly(handle, bytesOf(tokenLogProbs), recorded.offset, file);
        await readExactly(handle, bytesOf(argmax), recorded.offset + tokenLogProbs.byteLength, file);
        let fullRows: Float32Array | undefined;
        if (full) {
          const size = recorded.scored * entry.vocab;
          fullRows = options.recycle === true && rows !== undefined && rows.length >= size ? rows.subarray(0, size) : new Float32Array(size);
          if (options.recycle === true && (rows === undefined || rows.length < size)) rows = fullRows;
          await readExactly(handle, bytesOf(fullRows), recorded.offset + tokenLogProbs.byteLength + argmax.byteLength, file);
        }
        this.stats.windowsReplayed += 1;
        yield {
          window,
          tokens: tokens.slice(window.start, window.start + window.length),
          score: { tokenLogProbs, argmax, ...(fullRows !== undefined && { full: fullRows }) },
          nll: negativeLogLikelihood(tokenLogProbs),
        };
      }
    } finally {
      await rescored?.return(undefined);
      await handle.close();
    }
  }

  private async runKobest(options: KobestRunOptions, onProgress: VerifyOptions['onProgress']): Promise<KobestReport> {
    const request = {
      dir: resolve(options.dir),
      tasks: options.tasks ?? null,
      shots: options.shots ?? [0],
      split: options.split ?? 'test',
      limit: options.limit ?? null,
      maxLength: options.maxLength ?? null,
    };
    const name = sha256(this.options.key, KOBEST_SCHEMA, JSON.stringify(request)).slice(0, NAME_HEX);
    const known = this.kobestEntries.get(name);
    if (known !== undefined) {
      this.stats.kobestReplayed += 1;
      return known;
    }
    const file = this.file(`kobest-${name}`, '.json');
    const stored = (await readJson(file)) as { schema?: unknown; report?: KobestReport } | undefined;
    if (stored?.schema === KOBEST_SCHEMA && stored.report !== undefined) {
      this.kobestEntries.set(name, stored.report);
      this.stats.kobestReplayed += 1;
      return stored.report;
    }
    const report = await runKobest((await this.engine(onProgress)).engine, options);
    this.stats.kobestScored += 1;
    // JSON keeps finite doubles exactly; a non-finite log-likelihood (a broken model) would come back as
    // null, so such a report is kept in memory only.
    const text = JSON.stringify({ schema: KOBEST_SCHEMA, report });
    if (!/\bnull\b/.test(text)) await this.write(file, new TextEncoder().encode(`${text}\n`));
    this.kobestEntries.set(name, report);
    return report;
  }
}
