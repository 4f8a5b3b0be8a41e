/**
 * Numeric flags, checked as the user typed them: yargs turns `--ctx abc` into NaN and `-5%` into two
 * unknown short options, so every number flag is read as a string and checked here, and a negative value
 * after a flag is kept as that flag's value. Each message names the flag, the value and the range.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { KOBEST_TASK_NAMES, type KobestTaskName } from '../verify/kobest/index.js';

/**
 * Threads for every command: one name, `--threads` (convert, verify, demo, sweep; convert keeps its old
 * `--workers` as an alias), and one range, which both engines and the quantizer pool accept (the reference
 * engine's workers stop at 64).
 */
export const THREAD_FLAG_RANGE = { min: 1, max: 64 } as const;

/** The longest --ctx any engine takes (both engines' MAX_CONTEXT_LENGTH). */
export const MAX_CTX = 1 << 16;

function usage(detail: string, hint?: string): PolyquantError {
  return new PolyquantError(ERROR_CODES.USAGE, detail, hint === undefined ? {} : { hint });
}

function single(flag: string, raw: unknown): string | undefined {
  if (raw === undefined) return undefined;
  if (Array.isArray(raw)) throw usage(`${flag} is given ${raw.length} times; give it once`);
  return String(raw).trim();
}

/**
 * An integer flag from `min` to `max`; undefined when the flag is absent. Accepts only plain decimal
 * digits (with a sign), so `1e3`, `0x10`, `12abc` and `` are refused rather than read as something else.
 */
export function integerFlag(flag: string, raw: unknown, min: number, max: number = Number.MAX_SAFE_INTEGER): number | undefined {
  const text = single(flag, raw);
  if (text === undefined) return undefined;
  const value = /^[+-]?\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value)) {
    throw usage(`${flag} ${JSON.stringify(text)} is not an integer`, `give an integer from ${min}${max === Number.MAX_SAFE_INTEGER ? ' up' : ` to ${max}`}`);
  }
  if (value < min || value > max) {
    throw usage(`${flag} ${value} is out of range: expected an integer from ${min}${max === Number.MAX_SAFE_INTEGER ? ' up' : ` to ${max}`}`);
  }
  return value;
}

/** A positive finite number flag (`--limit 0.5` is a fraction, `--limit 20` a count). */
export function positiveNumberFlag(flag: string, raw: unknown, hint: string): number | undefined {
  const text = single(flag, raw);
  if (text === undefined) return undefined;
  const value = /^[+-]?(\d+(\.\d*)?|\.\d+)$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isFinite(value)) throw usage(`${flag} ${JSON.stringify(text)} is not a number`, hint);
  if (!(value > 0)) throw usage(`${flag} ${value} must be greater than 0`, hint);
  return value;
}

/** A comma-separated list of non-negative integers (`--shots 0,5`); an empty list or entry is refused. */
export function shotsFlag(flag: string, raw: unknown): number[] {
  const text = single(flag, raw) ?? '';
  const parts = text.split(',').map((part) => part.trim());
  if (text === '' || parts.some((part) => !/^\d+$/.test(part) || !Number.isSafeInteger(Number(part)))) {
    throw usage(`${flag} ${JSON.stringify(text)} is not a comma-separated list of non-negative integers`, 'e.g. --shots 0 or --shots 0,5');
  }
  return parts.map(Number);
}

/**
 * Keeps a value that starts with `-` attached to its flag (`--max-ppl-increase -5%` → `--max-ppl-increase=-5%`),
 * so that the flag's own check reports it instead of yargs reading `-5%` as unknown short options.
 */
export function attachNegativeValues(argv: readonly string[], valueFlags: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index] as string;
    const next = argv[index + 1];
    if (valueFlags.has(arg) && next !== undefined && /^-(\d|\.\d)/.test(next)) {
      out.push(`${arg}=${next}`);
      index += 1;
    } else {
      out.push(arg);
    }
  }
  return out;
}

/** `--tasks copa,kobest_hellaswag`: KOBEST task names, the `kobest_` prefix optional. */
export function tasksFlag(raw: string): KobestTaskName[] {
  return raw.split(',').map((part) => {
    const name = part.trim().replace(/^kobest_/, '');
    if (!(KOBEST_TASK_NAMES as readonly string[]).includes(name)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `--tasks: unknown KOBEST task ${JSON.stringify(part)}`, { hint: `choose from ${KOBEST_TASK_NAMES.join(', ')}` });
    }
    return name as KobestTaskName;
  });
}
