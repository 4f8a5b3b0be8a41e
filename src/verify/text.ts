/**
 * Evaluation text files: read whole, decoded as strict UTF-8, exactly as Python's
 * `open(path, encoding="utf-8").read()` gives them to the tokenizer (no newline translation is needed for
 * our LF-only corpora; a byte-order mark is kept as U+FEFF, as Python keeps it).
 */
import { resolve } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { readWholeFile } from '../io/file.js';

/** Evaluation texts are a few MB (the Korean corpus's valid.txt is 1.2 MB); past this the file is surely not one. */
export const MAX_TEXT_FILE_BYTES = 1024 * 1024 * 1024;

export interface TextFile {
  readonly file: string;
  readonly text: string;
  /** UTF-8 bytes of the file (bits per byte divide by this). */
  readonly bytes: number;
}

export async function readTextFile(path: string): Promise<TextFile> {
  const file = resolve(path);
  const raw = await readWholeFile(file, 'the text file', MAX_TEXT_FILE_BYTES);
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
