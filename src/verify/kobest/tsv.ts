/**
 * Tab-separated values read the way `pandas.read_csv(path, sep="\t")` reads them (pandas' C tokenizer,
 * pandas/_libs/src/parser/tokenizer.c, default dialect), because the HF loader kobest_v1.py reads the
 * official KoBEST TSVs that way and the harness sees its output (specs/eval.md §1, data/kobest/SOURCE.md):
 *
 * - `"` is the quote character even though the files are not meant to be quoted: a cell that *starts*
 *   with `"` is a quoted span, `""` inside it is one `"`, and after the closing quote the rest of the cell
 *   is taken literally. So `"국제시장"은 …` reads as `국제시장은 …` (12 BoolQ-train and 10 HellaSwag rows).
 *   A quoted span may hold tabs and line breaks.
 * - Empty lines are skipped; `\n`, `\r\n` and `\r` end a record; a UTF-8 BOM before the header is dropped.
 * - A record with more cells than the header is an error (pandas: "Expected N fields … saw M"); a shorter
 *   one is padded with missing cells, which `dropna()` then removes.
 */
import { malformed } from '../../errors.js';

export interface TsvRecord {
  /** 1-based line of the file the record starts on. */
  readonly line: number;
  /** One cell per header column; `undefined` where the record was short. */
  readonly cells: readonly (string | undefined)[];
}

export interface TsvTable {
  readonly header: readonly string[];
  readonly records: readonly TsvRecord[];
}

const TAB = '\t';
const QUOTE = '"';

/** Splits `text` into records of cells (quote handling as above); `file` names the source in errors. */
function tokenize(text: string, file: string): { line: number; cells: string[] }[] {
  const records: { line: number; cells: string[] }[] = [];
  let line = 1;
  let position = text.startsWith('\uFEFF') ? 1 : 0;
  while (position < text.length) {
    // Start of a record: blank lines (empty, or only spaces — pandas' WHITESPACE_LINE state) are skipped.
    let probe = position;
    while (probe < text.length && text[probe] === ' ') probe++;
    if (probe >= text.length) break;
    if (text[probe] === '\n' || text[probe] === '\r') {
      position = probe + (text[probe] === '\r' && text[probe + 1] === '\n' ? 2 : 1);
      line++;
      continue;
    }
    const startLine = line;
    const cells: string[] = [];
    let recordDone = false;
    while (!recordDone) {
      let cell = '';
      if (text[position] === QUOTE) {
        // IN_QUOTED_FIELD until a lone quote; "" is an escaped quote.
        position++;
        for (;;) {
          if (position >= text.length) {
            throw malformed(file, `line ${startLine}: end of file inside a quoted cell that starts on this line`);
          }
          const char = text[position]!;
          if (char === QUOTE) {
            if (text[position + 1] === QUOTE) {
              cell += QUOTE;
              position += 2;
              continue;
            }
            position++;
            break;
          }
          if (char === '\n' || (char === '\r' && text[position + 1] !== '\n')) line++;
          cell += char;
          position++;
        }
      }
      // IN_FIELD: everything up to the next tab or line break is literal, quotes included.
      while (position < text.length) {
        const char = text[position]!;
        if (char === TAB || char === '\n' || char === '\r') break;
        cell += char;
        position++;
      }
      cells.push(cell);
      if (position >= text.length) {
        recordDone = true;
      } else if (text[position] === TAB) {
        position++;
      } else {
        position += text[position] === '\r' && text[position + 1] === '\n' ? 2 : 1;
        line++;
        recordDone = true;
      }
    }
    records.push({ line: startLine, cells });
  }
  return records;
}

export function parseTsv(text: string, file: string): TsvTable {
  const [headerRecord, ...body] = tokenize(text, file);
  if (headerRecord === undefined) throw malformed(file, 'the file is empty: expected a header row of column names');
  const header = headerRecord.cells;
  const records = body.map(({ line, cells }): TsvRecord => {
    if (cells.length > header.length) {
      throw malformed(file, `line ${line}: expected ${header.length} tab-separated cells, saw ${cells.length}`, {
        hint: 'a stray tab inside a cell; quote the cell or remove the tab',
      });
    }
    const padded: (string | undefined)[] = [...cells];
    while (padded.length < header.length) padded.push(undefined);
    return { line, cells: padded };
  });
  return { header, records };
}

/**
 * pandas' default `na_values` (pandas 1.5, `STR_NA_VALUES`; the loader was checked against pandas 1.5.3):
 * a cell equal to one of these is NaN, and kobest_v1.py's `dropna()` removes its row.
 */
export const PANDAS_NA_VALUES: ReadonlySet<string> = new Set([
  '',
  '#N/A',
  '#N/A N/A',
  '#NA',
  '-1.#IND',
  '-1.#QNAN',
  '-NaN',
  '-nan',
  '1.#IND',
  '1.#QNAN',
  '<NA>',
  'N/A',
  'NA',
  'NULL',
  'NaN',
  'n/a',
  'nan',
  'null',
]);

export function isPandasMissing(cell: string | undefined): boolean {
  return cell === undefined || PANDAS_NA_VALUES.has(cell);
}
