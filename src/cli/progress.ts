/**
 * Progress for long work: an ora spinner with counts, bytes/s and ETA on a TTY; plain lines (at most one
 * every few seconds) otherwise, so CI logs stay readable.
 */
import ora, { type Ora } from 'ora';
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
