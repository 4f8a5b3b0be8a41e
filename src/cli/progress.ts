/**
 * Progress for long work: an ora spinner with counts, bytes/s and ETA on a TTY; plain lines (at most one
 * every few seconds) otherwise, so CI logs stay readable.
 */
import ora, { type Ora } from 'ora';
import { formatBytes } from './format.js';

export interface Progress {
  update(done: number, total: number): void;
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
    succeed(text) {
      if (spinner) spinner.succeed(text);
      else if (lastPlain > 0) stream.write(`${text}\n`);
    },
    fail(text) {
      if (spinner) spinner.fail(text);
    },
  };
}
