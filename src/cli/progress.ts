/**
 * Progress for long work: an ora spinner with counts, bytes/s and ETA on a TTY; plain lines (at most one
 * every few seconds) otherwise, so CI logs stay readable.
 */
import ora, { type Ora } from 'ora';
import type { SweepProgress } from '../sweep/sweep.js';
import type { VerifyProgress } from '../verify/verify.js';
import { formatBytes } from './format.js';

export interface Progress {
  update(done: number, total: number): void;
  /** A stage of work without counts (a spinner's text on a TTY, one line otherwise). */
  message(text: string): void;
  succeed(text: string): void;
  fail(text: string): void;
}

const PLAIN_INTERVAL_MS = 5000;

export function createProgress(label: string, stream: NodeJS.WriteStream = process.stderr): Progress {
  const started = Date.now();
  const isTTY = stream.isTTY === true;
  let spinner: Ora | undefined;
  let lastPlain = 0;
  const describe = (done: number, total: number): string => {
    const seconds = (Date.now() - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const eta = rate > 0 && total > done ? ` ETA ${Math.ceil((total - done) / rate)}s` : '';
    const percent = total > 0 ? ` ${((100 * done) / total).toFixed(1)}%` : '';
    return `${label}: ${formatBytes(done)} / ${formatBytes(total)}${percent}, ${formatBytes(rate)}/s${eta}`;
  };
  return {
    update(done, total) {
      if (isTTY) {
        spinner ??= ora({ stream, isEnabled: true }).start();
        spinner.text = describe(done, total);
        return;
      }
      const now = Date.now();
      if (now - lastPlain >= PLAIN_INTERVAL_MS) {
        lastPlain = now;
        stream.write(`${describe(done, total)}\n`);
      }
    },
    message(text) {
      if (isTTY) {
        spinner ??= ora({ stream, isEnabled: true }).start();
        spinner.text = `${label}: ${text}`;
        return;
      }
      lastPlain = Date.now();
      stream.write(`${label}: ${text}\n`);
    },
    succeed(text) {
      if (spinner) spinner.succeed(text);
      else if (lastPlain > 0) stream.write(`${text}\n`);
    },
    fail(text) {
      if (spinner) spinner.fail(text);
    },
  };
}

/** Progress for `verify`: windows and tokens/s for perplexity, documents for KOBEST, with an ETA. */
export function createCountProgress(stream: NodeJS.WriteStream = process.stderr): { report(event: VerifyProgress): void; done(): void } {
  const isTTY = stream.isTTY === true;
  let spinner: Ora | undefined;
  let lastPlain = 0;
  let stageStarted = Date.now();
  let stageKey = '';
  const show = (text: string): void => {
    if (isTTY) {
      spinner ??= ora({ stream, isEnabled: true }).start();
      spinner.text = text;
    } else if (Date.now() - lastPlain >= PLAIN_INTERVAL_MS) {
      lastPlain = Date.now();
      stream.write(`${text}\n`);
    }
  };
  const eta = (done: number, total: number): string => {
    const seconds = (Date.now() - stageStarted) / 1000;
    return done > 0 && total > done ? `, ETA ${Math.ceil((seconds / done) * (total - done))}s` : '';
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
      if (key !== stageKey) {
        stageKey = key;
        stageStarted = Date.now();
      }
      if (event.stage === 'load') show(`loading ${event.model} ${event.path}`);
      else if (event.stage === 'cache') {
        const verb = event.step === 'hash' ? 'hashing the checkpoint for the GGUF cache' : 'converting to GGUF for llama.cpp (once; cached)';
        show(`${event.model}: ${verb} ${((event.done / Math.max(1, event.total)) * 100).toFixed(0)}% of ${(event.total / 1e9).toFixed(2)} GB${eta(event.done, event.total)}`);
      }
      else if (event.stage === 'perplexity') {
        const seconds = Math.max(1e-3, (Date.now() - stageStarted) / 1000);
        show(`perplexity ${event.file}: window ${event.done}/${event.windows}, ${Math.round(event.tokens / seconds)} tokens/s (each model)${eta(event.done, event.windows)}`);
      } else show(`KOBEST ${event.task} ${event.shots}-shot (${event.model}): ${event.done}/${event.total}${eta(event.done, event.total)}`);
    },
    done() {
      spinner?.stop();
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

const clock = (seconds: number): string => (seconds >= 90 ? `${Math.floor(seconds / 60)}m${String(Math.round(seconds % 60)).padStart(2, '0')}s` : `${Math.round(seconds)}s`);

/**
 * Progress across a whole sweep: cells done of the run's total, the current cell and its step (convert,
 * verify and what verify is doing), and an ETA once a cell has been computed (the mean time of the cells
 * computed so far × the cells left). Cell starts, ends and skips are always printed as lines, so a CI log
 * shows which cell ran and which was found done; the step inside a cell is a spinner on a TTY and a line
 * every few seconds otherwise.
 */
export function createSweepProgress(stream: NodeJS.WriteStream = process.stderr): { report(event: SweepProgress): void; done(): void } {
  const isTTY = stream.isTTY === true;
  let spinner: Ora | undefined;
  let lastPlain = 0;
  const durations: number[] = [];
  let cellStarted = Date.now();
  let position = { index: 0, total: 0 };
  const eta = (): string => {
    // Cells left, counting the one in flight (position.index is the next cell once one has finished).
    if (durations.length === 0 || position.total - position.index + 1 <= 0) return '';
    const mean = durations.reduce((sum, value) => sum + value, 0) / durations.length;
    const left = Math.max(0, mean * (position.total - position.index + 1) - (Date.now() - cellStarted) / 1000);
    return `, ETA ${clock(left)}`;
  };
  const transient = (text: string): void => {
    if (isTTY) {
      spinner ??= ora({ stream, isEnabled: true }).start();
      spinner.text = text;
    } else if (Date.now() - lastPlain >= PLAIN_INTERVAL_MS) {
      lastPlain = Date.now();
      stream.write(`${text}\n`);
    }
  };
  const line = (text: string): void => {
    if (spinner !== undefined) {
      spinner.clear();
      stream.write(`${text}\n`);
      spinner.render();
    } else stream.write(`${text}\n`);
  };
  return {
    report(event) {
      if (event.stage === 'hash') transient(`hashing the model ${((event.done / Math.max(1, event.total)) * 100).toFixed(0)}%`);
      else if (event.stage === 'baseline') transient(`baseline: ${describeVerifyEvent(event.event)}`);
      else if (event.stage === 'baseline-done') line(`baseline scored once in ${event.seconds.toFixed(1)} s; every cell replays it`);
      else if (event.stage === 'step') {
        position = { index: event.index, total: event.total };
        const what = event.step.step === 'convert' ? `converting ${((event.step.done / Math.max(1, event.step.total)) * 100).toFixed(0)}%` : `verifying: ${describeVerifyEvent(event.step.event)}`;
        transient(`[${event.index}/${event.total}] ${event.cell}: ${what}${eta()}`);
      } else {
        position = { index: event.index, total: event.total };
        const tag = `[${event.index}/${event.total}] ${event.cell}`;
        if (event.event === 'start') {
          cellStarted = Date.now();
          line(`${tag}: converting and verifying${eta()}`);
        } else if (event.event === 'skip') line(`${tag}: skipped, already done (${event.verdict})`);
        else if (event.event === 'regate') line(`${tag}: already done; gated again under the new thresholds (${event.verdict})`);
        else {
          durations.push(event.seconds ?? 0);
          position = { index: event.index + 1, total: event.total };
          cellStarted = Date.now();
          line(event.event === 'done' ? `${tag}: ${event.verdict} in ${(event.seconds ?? 0).toFixed(1)} s${eta()}` : `${tag}: error: ${event.message ?? ''}`);
        }
      }
    },
    done() {
      spinner?.stop();
    },
  };
}
