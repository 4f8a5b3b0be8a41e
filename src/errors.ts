/**
 * The one error type polyquant throws for anything a user can cause: bad input, bad flags, a failed
 * check. Every message names the file (and tensor where there is one), the offending value, the limit
 * it broke, and what to do about it. Bad bytes may only ever surface as a PolyquantError — a fuzz test
 * holds every reader to that (STYLE.md §9, after the safetensors crate's `SafeTensorError`).
 */

/** One code per kind of failure. The CLI maps each code to an exit status through EXIT_CODES. */
export const ERROR_CODES = {
  /** Bad command-line usage: unknown flag value, missing argument. */
  USAGE: 'usage',
  /** A file or directory that should exist does not. */
  NOT_FOUND: 'not-found',
  /** The bytes of a file do not follow its format (truncated, bad header, bad offsets …). */
  MALFORMED: 'malformed',
  /** A value is well-formed but past a limit polyquant enforces (header size, rank, dimension …). */
  LIMIT: 'limit',
  /** The input asks for something polyquant refuses for safety (a pickle GLOBAL outside the allow list). */
  UNSAFE: 'unsafe',
  /** Well-formed input polyquant does not support (an unknown architecture, a dtype, legacy torch format). */
  UNSUPPORTED: 'unsupported',
  /** config.json / tokenizer files are missing fields or inconsistent with the weights. */
  CONFIG: 'config',
  /** The operating system refused an operation (permissions, disk full). */
  IO: 'io',
  /** A verification threshold failed: the input was fine, the result was not. */
  CHECK_FAILED: 'check-failed',
} as const;

export type ErrorCode = (typeof ERROR_CODES)[keyof typeof ERROR_CODES];

/** CLI exit status per code: 0 ok, 1 a check failed, 2 bad input or usage. */
export const EXIT_CODES: Record<ErrorCode, number> = {
  usage: 2,
  'not-found': 2,
  malformed: 2,
  limit: 2,
  unsafe: 2,
  unsupported: 2,
  config: 2,
  io: 2,
  'check-failed': 1,
};

export interface ErrorContext {
  /** The file the problem is in (absolute or as the user gave it). */
  file?: string | undefined;
  /** The tensor (or config key, or pickle global) concerned. */
  tensor?: string | undefined;
  /** What the user can do about it. */
  hint?: string | undefined;
  cause?: unknown;
}

export class PolyquantError extends Error {
  readonly code: ErrorCode;
  readonly file: string | undefined;
  readonly tensor: string | undefined;
  readonly hint: string | undefined;
  /** The bare problem statement, without the file/tensor/hint decoration that `message` carries. */
  readonly detail: string;

  constructor(code: ErrorCode, detail: string, context: ErrorContext = {}) {
    super(formatMessage(detail, context), context.cause === undefined ? undefined : { cause: context.cause });
    this.name = 'PolyquantError';
    this.code = code;
    this.detail = detail;
    this.file = context.file;
    this.tensor = context.tensor;
    this.hint = context.hint;
  }

  get exitCode(): number {
    return EXIT_CODES[this.code];
  }

  toJSON(): { code: ErrorCode; message: string; file: string | undefined; tensor: string | undefined; hint: string | undefined } {
    return { code: this.code, message: this.detail, file: this.file, tensor: this.tensor, hint: this.hint };
  }
}

function formatMessage(detail: string, context: ErrorContext): string {
  const where = [context.file, context.tensor === undefined ? undefined : `tensor "${context.tensor}"`]
    .filter((part) => part !== undefined)
    .join(': ');
  const head = where === '' ? detail : `${where}: ${detail}`;
  return context.hint === undefined ? head : `${head} (${context.hint})`;
}

export function isPolyquantError(error: unknown): error is PolyquantError {
  return error instanceof PolyquantError;
}

/** Shorthand for the most common case: bytes that break their format. */
export function malformed(file: string, detail: string, context: Omit<ErrorContext, 'file'> = {}): PolyquantError {
  return new PolyquantError(ERROR_CODES.MALFORMED, detail, { ...context, file });
}

/**
 * Runs `body` and turns anything that is not already a PolyquantError (a RangeError from a DataView, a
 * SyntaxError from JSON.parse, an exception from a third-party parser) into a MALFORMED error naming the
 * file. Readers wrap their parsing in this so that hostile bytes can never leak a raw error.
 */
export async function guardFormat<T>(file: string, what: string, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    if (error instanceof PolyquantError) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new PolyquantError(ERROR_CODES.MALFORMED, `${what} is not valid: ${reason}`, { file, cause: error });
  }
}
