/**
 * Progress for long work, on stderr. Three modes, chosen once per progress:
 *
 * - `tty`: one status line redrawn in place (`\r`, erase to end of line) at most every TTY_INTERVAL_MS,
 *   with a bar, counts, rate and ETA, never wider than the terminal (so it never wraps, and a redraw
 *   never has more than one line to erase). Needs a TTY at least MIN_COLUMNS wide.
 * - `plain`: no escape codes; the first status as a line, then at most one line every PLAIN_INTERVAL_MS,
 *   plus the end line — what CI logs and `script` recordings get. A TTY of 0 columns (a pseudo-terminal
 *   whose size nobody set, as `script -q -c …` makes when its own input is not a terminal) is plain:
 *   ora, used before, divided by those 0 columns, got an infinite line count and erased lines forever in
 *   one synchronous loop (367 MB of escape codes in 10 minutes, and SIGTERM never ran).
 * - `off`: nothing (`quiet`, or POLYQUANT_PROGRESS=off).
 *
 * POLYQUANT_PROGRESS=auto|tty|plain|off overrides the choice (`tty` still needs a TTY of MIN_COLUMNS).
 * Rate and ETA appear only once they mean something: the rate after RATE_AFTER_MS of updates, the ETA
 * also after ETA_AFTER_MS and ETA_AFTER_FRACTION of the work — never "ETA 17477 s" for a 0.7 s job.
 * No timers: nothing keeps the process alive and nothing is drawn between updates.
 */
import type { SweepProgress } from '../sweep/sweep.js';
import type { VerifyProgress } from '../verify/verify.js';
import { formatBytes } from './format.js';

/** What a progress writes to: process.stderr, or a fake in tests. */
export interface ProgressStream {
  write(text: string): unknown;
  readonly isTTY?: boolean | undefined;
  readonly columns?: number | undefined;
}

export interface ProgressOptions {
  /** Default process.stderr. */
  readonly stream?: ProgressStream;
  /** Write nothing at all (`--quiet`). */
  readonly quiet?: boolean;
  /** Milliseconds, monotonic; default performance.now. Tests pass a fake clock. */
  readonly now?: () => number;
  /** Environment read for POLYQUANT_PROGRESS; default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** How `update` counts are shown: bytes (default) or a plain count with this noun ("documents"). */
  readonly unit?: 'bytes' | { readonly noun: string };
}

export type ProgressMode = 'tty' | 'plain' | 'off';

/** Narrowest terminal the status line is drawn on; narrower (or 0 columns) gets plain lines. */
export const MIN_COLUMNS = 20;
/** Fastest redraw on a TTY: 5 a second is smooth and costs nothing. */
export const TTY_INTERVAL_MS = 200;
/** One status line per this interval when stderr is not a TTY (logs, CI). */
export const PLAIN_INTERVAL_MS = 10_000;
/** A rate over less time than this is noise (start-up, the first chunk's read-ahead). */
export const RATE_AFTER_MS = 2000;
/** An ETA is shown only after this much time … */
export const ETA_AFTER_MS = 3000;
/** … and this fraction of the work. */
export const ETA_AFTER_FRACTION = 0.05;
/** Width of the bar on a TTY (dropped when the terminal is too narrow for it). */
const BAR_WIDTH = 20;

/** The mode a progress on `stream` runs in: POLYQUANT_PROGRESS, then whether the stream is a usable TTY. */
export function progressMode(stream: ProgressStream, options: Pick<ProgressOptions, 'quiet' | 'env'> = {}): ProgressMode {
  if (options.quiet === true) return 'off';
  const env = options.env ?? process.env;
  const forced = (env['POLYQUANT_PROGRESS'] ?? '').trim().toLowerCase();
  if (forced === 'off' || forced === '0' || forced === 'none') return 'off';
  if (forced === 'plain') return 'plain';
  const usableTty = stream.isTTY === true && (stream.columns ?? 0) >= MIN_COLUMNS && env['TERM'] !== 'dumb';
  return usableTty ? 'tty' : 'plain';
}

/** Seconds as a short clock: 7s, 1m30s, 2h05m. */
export function formatDuration(seconds: number): string {
  const whole = Math.max(0, Math.round(seconds));
  if (whole < 90) return `${whole}s`;
  if (whole < 5400) return `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, '0')}s`;
  return `${Math.floor(whole / 3600)}h${String(Math.floor((whole % 3600) / 60)).padStart(2, '0')}m`;
}

/** Columns a terminal gives a code point: 2 for East Asian wide ones (Hangul, CJK, full-width), else 1. */
function codePointWidth(codePoint: number): number {
  if (codePoint < 0x1100) return 1;
  const wide =
    codePoint <= 0x115f ||
    (codePoint >= 0x2e80 && codePoint <= 0xa4cf) ||
    (codePoint >= 0xac00 && codePoint <= 0xd7a3) ||
    (codePoint >= 0xf900 && codePoint <= 0xfaff) ||
    (codePoint >= 0xfe30 && codePoint <= 0xfe4f) ||
    (codePoint >= 0xff00 && codePoint <= 0xff60) ||
    (codePoint >= 0xffe0 && codePoint <= 0xffe6) ||
    (codePoint >= 0x1f300 && codePoint <= 0x1faff) ||
    (codePoint >= 0x20000 && codePoint <= 0x3fffd);
  return wide ? 2 : 1;
}

/** `text` cut to at most `columns` terminal columns (an ellipsis marks the cut); control characters become spaces. */
export function fitToColumns(text: string, columns: number): string {
  let width = 0;
  const out: string[] = [];
  for (const character of text) {
    const codePoint = character.codePointAt(0) ?? 0;
    // A control character (an escape code, a newline) would move the cursor: shown as a space.
    const control = codePoint < 0x20 || (codePoint >= 0x7f && codePoint <= 0x9f);
    const next = control ? 1 : codePointWidth(codePoint);
    // The last character kept gives way to the ellipsis (one column, never more than it took).
    if (width + next > columns) return `${out.slice(0, -1).join('')}…`;
    out.push(control ? ' ' : character);
    width += next;
  }
  return out.join('');
}

/** Status lines on a terminal right now: an error message must not be printed onto one of them. */
const drawn = new Set<StatusLine>();

/** Erases every status line still drawn (before the CLI prints an error or exits); whether there was one. */
export function eraseProgress(): boolean {
  const any = drawn.size > 0;
  for (const status of [...drawn]) status.end();
  return any;
}

/**
 * The one place that writes to the stream: a transient status (redrawn on a TTY, sampled in plain mode)
 * and permanent lines (printed above the status on a TTY).
 */
class StatusLine {
  private shown = '';
  private lastDraw = Number.NEGATIVE_INFINITY;
  private lastPlain = Number.NEGATIVE_INFINITY;
  private printedAnything = false;

  constructor(
    readonly mode: ProgressMode,
    private readonly stream: ProgressStream,
    readonly now: () => number,
  ) {}

  /** Columns available for the status: one less than the terminal, so the cursor never wraps. */
  get columns(): number {
    return Math.max(MIN_COLUMNS, this.stream.columns ?? 80) - 1;
  }

  /** A status that replaces the previous one; `force` draws it even inside the throttle interval. */
  status(text: string, force = false): void {
    if (this.mode === 'off') return;
    const time = this.now();
    if (this.mode === 'tty') {
      if (!force && time - this.lastDraw < TTY_INTERVAL_MS) return;
      this.lastDraw = time;
      this.draw(fitToColumns(text, this.columns));
      return;
    }
    if (!force && time - this.lastPlain < PLAIN_INTERVAL_MS) return;
    this.lastPlain = time;
    this.write(`${text}\n`);
  }

  /** A line that stays (a sweep cell's end, a succeed message); the status, if any, is drawn again below it. */
  line(text: string): void {
    if (this.mode === 'off') return;
    if (this.mode === 'tty' && this.shown !== '') {
      const status = this.shown;
      this.erase();
      this.write(`${text}\n`);
      this.draw(status);
      return;
    }
    this.write(`${text}\n`);
  }

  /** Ends the status: erases it on a TTY; then prints `text`, if given, as a line. */
  end(text?: string): void {
    if (this.mode === 'off') return;
    if (this.mode === 'tty') this.erase();
    if (text !== undefined) this.write(`${text}\n`);
  }

  /** Whether anything was written (plain mode prints the end line only after a start line). */
  get started(): boolean {
    return this.printedAnything;
  }

  private draw(text: string): void {
    if (text === this.shown) return;
    this.write(`\r${text}\u001b[K`);
    this.shown = text;
    drawn.add(this);
  }

  private erase(): void {
    if (this.shown === '') return;
    this.write('\r\u001b[K');
    this.shown = '';
    drawn.delete(this);
  }

  private write(text: string): void {
    this.printedAnything = true;
    this.stream.write(text);
  }
}

/**
 * Rate and ETA from the first update on (start-up before it, such as reading a header, is not counted):
 * the mean rate since then, shown once RATE_AFTER_MS have passed; the ETA also needs ETA_AFTER_MS and
 * ETA_AFTER_FRACTION of the total done.
 */
export class RateEstimate {
  private first: { time: number; done: number } | undefined;

  observe(done: number, total: number, time: number): { rate: number | undefined; etaSeconds: number | undefined } {
    this.first ??= { time, done };
    const elapsed = time - this.first.time;
    const moved = done - this.first.done;
    if (elapsed < RATE_AFTER_MS || moved <= 0) return { rate: undefined, etaSeconds: undefined };
    const rate = moved / (elapsed / 1000);
    const meaningful = elapsed >= ETA_AFTER_MS && total > 0 && done / total >= ETA_AFTER_FRACTION && done < total;
    return { rate, etaSeconds: meaningful ? (total - done) / rate : undefined };
  }

  reset(): void {
    this.first = undefined;
  }
}

function bar(fraction: number): string {
  const filled = Math.round(Math.min(1, Math.max(0, fraction)) * BAR_WIDTH);
  return `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`;
}

export interface Progress {
  /** Work done of total (bytes, or the `unit` noun's count). */
  update(done: number, total: number): void;
  /** A stage of work without counts (the status line on a TTY, a line otherwise). */
  message(text: string): void;
  /** A line that stays, printed above the status (a warning, a finished step). */
  line(text: string): void;
  /** Ends with a success line (plain mode: only when a status was printed, so a quick job stays quiet but for it). */
  succeed(text: string): void;
  /** Ends with a failure line. */
  fail(text: string): void;
  /** The mode chosen (tty, plain or off). */
  readonly mode: ProgressMode;
}

/** A progress for one job: `label: [bar] 42% 1.2 GB / 2.6 GB, 120 MB/s, ETA 12s`. */
export function createProgress(label: string, options: ProgressOptions = {}): Progress {
  const stream = options.stream ?? process.stderr;
  const now = options.now ?? (() => performance.now());
  const status = new StatusLine(progressMode(stream, options), stream, now);
  const estimate = new RateEstimate();
  const unit = options.unit ?? 'bytes';
  const amount = (value: number): string => (unit === 'bytes' ? formatBytes(value) : `${Math.round(value)}`);
  const perSecond = (rate: number): string => (unit === 'bytes' ? `${formatBytes(rate)}/s` : `${rate >= 10 ? Math.round(rate) : rate.toFixed(1)} ${unit.noun}/s`);
  const describe = (done: number, total: number): string => {
    const { rate, etaSeconds } = estimate.observe(done, total, now());
    const fraction = total > 0 ? done / total : 0;
    const counts = unit === 'bytes' ? `${amount(done)} / ${amount(total)}` : `${amount(done)}/${amount(total)} ${unit.noun}`;
    const parts = [`${(100 * fraction).toFixed(fraction < 0.1 ? 1 : 0)}%`, counts];
    if (rate !== undefined) parts.push(perSecond(rate));
    if (etaSeconds !== undefined) parts.push(`ETA ${formatDuration(etaSeconds)}`);
    const head = status.mode === 'tty' && status.columns >= 60 ? `${label} ${bar(fraction)} ` : `${label}: `;
    return `${head}${parts.join(', ')}`;
  };
  return {
    mode: status.mode,
    update(done, total) {
      // The estimate is fed on every update, the text built only when it will be drawn.
      status.status(describe(done, total));
    },
    message(text) {
      estimate.reset();
      status.status(`${label}: ${text}`, true);
    },
    line(text) {
      status.line(text);
    },
    succeed(text) {
      if (status.mode === 'tty' || status.started) status.end(text);
    },
    fail(text) {
      status.end(text);
    },
  };
}

/** Progress for `verify`: windows and tokens/s for perplexity, documents for KOBEST, each with an ETA once it means something. */
export function createCountProgress(options: ProgressOptions = {}): { report(event: VerifyProgress): void; done(): void } {
  const stream = options.stream ?? process.stderr;
  const now = options.now ?? (() => performance.now());
  const status = new StatusLine(progressMode(stream, options), stream, now);
  // Per stage: the work's own counts (bytes, windows, documents) for the ETA, and perplexity's tokens for its rate.
  const work = new RateEstimate();
  const tokens = new RateEstimate();
  let stageKey = '';
  const eta = (done: number, total: number): string => {
    const { etaSeconds } = work.observe(done, total, now());
    return etaSeconds === undefined ? '' : `, ETA ${formatDuration(etaSeconds)}`;
  };
  return {
    report(event) {
      const key =
        event.stage === 'load'
          ? `load ${event.path}`
          : event.stage === 'cache'
            ? `cache ${event.model} ${event.step}`
            : event.stage === 'perplexity'
              ? `ppl ${event.file}`
              : `kobest ${event.model} ${event.task} ${event.shots}`;
      const newStage = key !== stageKey;
      if (newStage) {
        stageKey = key;
        work.reset();
        tokens.reset();
      }
      if (event.stage === 'load') status.status(`loading the ${event.model}: ${event.path}`, true);
      else if (event.stage === 'cache') {
        const verb = event.step === 'hash' ? 'hashing the checkpoint for the GGUF cache' : 'converting to GGUF for llama.cpp (once; cached)';
        status.status(`${event.model}: ${verb} ${((event.done / Math.max(1, event.total)) * 100).toFixed(0)}% of ${formatBytes(event.total)}${eta(event.done, event.total)}`, newStage);
      } else if (event.stage === 'perplexity') {
        const { rate } = tokens.observe(event.tokens, Number.POSITIVE_INFINITY, now());
        const tokensPerSecond = rate === undefined ? '' : `, ${Math.round(rate)} tokens/s (each model)`;
        status.status(`perplexity ${event.file}: window ${event.done}/${event.windows}${tokensPerSecond}${eta(event.done, event.windows)}`, newStage);
      } else status.status(`KOBEST ${event.task} ${event.shots}-shot (${event.model}): ${event.done}/${event.total} documents${eta(event.done, event.total)}`, newStage);
    },
    done() {
      status.end();
    },
  };
}

/** One line for a verify event, without timing (the sweep's progress adds its own). */
function describeVerifyEvent(event: VerifyProgress): string {
  if (event.stage === 'load') return `loading the ${event.model}`;
  if (event.stage === 'cache') return `${event.model}: ${event.step === 'hash' ? 'hashing for the GGUF cache' : 'converting to GGUF (once; cached)'} ${((event.done / Math.max(1, event.total)) * 100).toFixed(0)}%`;
  if (event.stage === 'perplexity') return `perplexity window ${event.done}/${event.windows}`;
  return `KOBEST ${event.task} ${event.shots}-shot (${event.model}) ${event.done}/${event.total}`;
}

/**
 * Progress across a whole sweep: cells done of the run's total, the current cell and its step (convert,
 * verify and what verify is doing), and an ETA once a cell has been computed (the mean time of the cells
 * computed so far × the cells left). Cell starts, ends and skips are always printed as lines, so a CI log
 * shows which cell ran and which was found done; the step inside a cell is the status line on a TTY and a
 * line every PLAIN_INTERVAL_MS otherwise.
 */
export function createSweepProgress(options: ProgressOptions = {}): { report(event: SweepProgress): void; done(): void } {
  const stream = options.stream ?? process.stderr;
  const now = options.now ?? (() => performance.now());
  const status = new StatusLine(progressMode(stream, options), stream, now);
  const durations: number[] = [];
  let cellStarted = now();
  let position = { index: 0, total: 0 };
  const eta = (): string => {
    // Cells left, counting the one in flight (position.index is the next cell once one has finished).
    if (durations.length === 0 || position.total - position.index + 1 <= 0) return '';
    const mean = durations.reduce((sum, value) => sum + value, 0) / durations.length;
    const left = Math.max(0, mean * (position.total - position.index + 1) - (now() - cellStarted) / 1000);
    return `, ETA ${formatDuration(left)}`;
  };
  return {
    report(event) {
      if (event.stage === 'hash') status.status(`hashing the model ${((event.done / Math.max(1, event.total)) * 100).toFixed(0)}%`);
      else if (event.stage === 'baseline') status.status(`baseline: ${describeVerifyEvent(event.event)}`);
      else if (event.stage === 'baseline-done') status.line(`baseline scored once in ${event.seconds.toFixed(1)} s; every cell replays it`);
      else if (event.stage === 'step') {
        position = { index: event.index, total: event.total };
        const { step } = event;
        const what =
          step.step === 'calibrate'
            ? `calibrating (once for every calibrated cell): ${step.done}/${step.total} chunks`
            : step.step === 'convert'
              ? `converting ${((step.done / Math.max(1, step.total)) * 100).toFixed(0)}%`
              : `verifying: ${describeVerifyEvent(step.event)}`;
        status.status(`[${event.index}/${event.total}] ${event.cell}: ${what}${eta()}`);
      } else {
        position = { index: event.index, total: event.total };
        const tag = `[${event.index}/${event.total}] ${event.cell}`;
        if (event.event === 'start') {
          cellStarted = now();
          status.line(`${tag}: converting and verifying${eta()}`);
        } else if (event.event === 'skip') status.line(`${tag}: skipped, already done (${event.verdict})`);
        else if (event.event === 'regate') status.line(`${tag}: already done; gated again under the new thresholds (${event.verdict})`);
        else {
          durations.push(event.seconds ?? 0);
          position = { index: event.index + 1, total: event.total };
          cellStarted = now();
          status.line(event.event === 'done' ? `${tag}: ${event.verdict} in ${(event.seconds ?? 0).toFixed(1)} s${eta()}` : `${tag}: error: ${event.message ?? ''}`);
        }
      }
    },
    done() {
      status.end();
    },
  };
}
