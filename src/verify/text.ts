/**
 * Evaluation text files: read whole, decoded as strict UTF-8, exactly as Python's
 * `open(path, encoding="utf-8").read()` gives them to the tokenizer (no newline translation is needed for
 * our LF-only corpora; a byte-order mark is kept as U+FEFF, as Python keeps it).
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { ioError } from '../io/file.js';

export interface TextFile {
  readonly file: string;
  readonly text: string;
  /** UTF-8 bytes of the file (bits per byte divide by this). */
  readonly bytes: number;
}

export async function readTextFile(path: string): Promise<TextFile> {
  const file = resolve(path);
  let raw: Uint8Array;
  try {
    raw = await readFile(file);
  } catch (error) {
    throw ioError(file, 'read the text file', error);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(raw);
  } catch (error) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, 'the text file is not valid UTF-8', { file, cause: error });
  }
  return { file, text, bytes: raw.length };
}

/** UTF-8 length of a string without encoding it. */
export function utf8ByteLength(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}
