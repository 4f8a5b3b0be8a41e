/**
 * Interrupts: on SIGINT / SIGTERM the temp files and folders in flight (io/temp.ts) are removed and the
 * process exits with the shell's code for the signal (128 + its number: 130, 143). The final outputs are
 * never touched: they only ever appear by rename, complete.
 */
import { removeTrackedTempsSync } from '../io/temp.js';
import { eraseProgress } from './progress.js';

export const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;

export function installInterruptCleanup(stderr: (text: string) => void = (text) => process.stderr.write(text)): void {
  for (const [signal, code] of Object.entries(SIGNAL_EXIT_CODES)) {
    process.once(signal, () => {
      const removed = removeTrackedTempsSync();
      // The progress line, if one is drawn, gives way to the message; otherwise a new line (after a ^C echo).
      const erased = eraseProgress();
      stderr(`${erased ? '' : '\n'}polyquant: interrupted by ${signal}${removed.length > 0 ? `; removed ${removed.length} temp file(s) in flight` : ''}\n`);
      process.exit(code);
    });
  }
}
