import { ERROR_CODES, PolyquantError } from '../errors.js';
import { readWholeFile } from '../io/file.js';

/** Config and tokenizer JSON files are small; anything past this is not one (the largest real tokenizer.json seen is ~17 MB). */
export const MAX_JSON_FILE_BYTES = 256 * 1024 * 1024;

/** Reads and parses a JSON file with errors that name the file; `undefined` when it is absent and optional. */
export async function readJsonFile(path: string): Promise<unknown> {
  const bytes = await readWholeFile(path, 'JSON file', MAX_JSON_FILE_BYTES);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new PolyquantError(ERROR_CODES.MALFORMED, 'file is not valid UTF-8', { file: path });
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new PolyquantError(ERROR_CODES.MALFORMED, `not valid JSON: ${reason}`, { file: path });
  }
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
