/**
 * KOBEST splits from disk, in either of two layouts:
 *
 * - ours (data/kobest/SOURCE.md): `<dir>/<task>/<split>.jsonl`, one HF `skt/kobest_v1` record per line
 *   with the HF field names, `label` as the ClassLabel index, plus `idx`, `id`, `extra`, `raw`;
 * - the official TSVs of SKT-LSL/KoBEST_datarepo: `<dir>/<Folder>/{train,dev,test}.tsv` (or under
 *   `<dir>/v1.0/`), turned into the same records the way the HF loader kobest_v1.py does: pandas parsing
 *   (quote stripping, TRUE/True booleans; tsv.ts), `dropna()`, column renames and label mapping.
 *
 * Every record is checked against the task table (tasks.ts) so that a bad file fails here, naming the
 * file, line and field, instead of as a KeyError deep in prompt building or a silently wrong label.
 */
import { join } from 'node:path';
import { ERROR_CODES, malformed, PolyquantError } from '../../errors.js';
import { pathExists, readWholeFile } from '../../io/file.js';
import { isRecord } from '../../readers/json-file.js';
import { isPandasMissing, parseTsv } from './tsv.js';
import {
  KOBEST_SPLITS,
  KOBEST_TASKS,
  type KobestDocuments,
  type KobestSplit,
  type KobestTask,
  type KobestTaskName,
  type TsvLayout,
  tsvFileName,
} from './tasks.js';

/** The largest KOBEST file is ~2 MB (BoolQ train); past this the path is surely not a KOBEST split. */
export const MAX_SPLIT_FILE_BYTES = 256 * 1024 * 1024;

export type KobestFileFormat = 'jsonl' | 'tsv';

export interface KobestSplitData<Name extends KobestTaskName> {
  readonly task: Name;
  readonly split: KobestSplit;
  readonly file: string;
  readonly format: KobestFileFormat;
  /** In file (= HF) order: `documents[i].idx === i`. */
  readonly documents: readonly KobestDocuments[Name][];
  /** TSV rows `dropna()` removed (a missing or NA cell, as pandas reads it); always 0 for JSONL. */
  readonly droppedRows: number;
}

interface Candidate {
  readonly path: string;
  readonly format: KobestFileFormat;
}

/** Where a split may live, in the order they are tried. */
export function kobestSplitCandidates(dir: string, task: KobestTaskName, split: KobestSplit): Candidate[] {
  const folder = KOBEST_TASKS[task].tsvFolder;
  const tsv = tsvFileName(split);
  return [
    { path: join(dir, task, `${split}.jsonl`), format: 'jsonl' },
    { path: join(dir, folder, tsv), format: 'tsv' },
    { path: join(dir, 'v1.0', folder, tsv), format: 'tsv' },
  ];
}

function checkSplitForTask(task: KobestTaskName, split: KobestSplit): void {
  if (split === 'test_originated' && KOBEST_TASKS[task].tsvOriginated === undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, `split test_originated exists only for sentineg, not ${task}`);
  }
}

/** The splits of `task` present under `dir` (for error messages and `--split` help). */
export async function availableKobestSplits(dir: string, task: KobestTaskName): Promise<KobestSplit[]> {
  const found: KobestSplit[] = [];
  for (const split of KOBEST_SPLITS) {
    if (split === 'test_originated' && KOBEST_TASKS[task].tsvOriginated === undefined) continue;
    for (const candidate of kobestSplitCandidates(dir, task, split)) {
      if (await pathExists(candidate.path)) {
        found.push(split);
        break;
      }
    }
  }
  return found;
}

export async function loadKobestSplit<Name extends KobestTaskName>(
  dir: string,
  task: Name,
  split: KobestSplit,
): Promise<KobestSplitData<Name>> {
  checkSplitForTask(task, split);
  const candidates = kobestSplitCandidates(dir, task, split);
  for (const candidate of candidates) {
    if (!(await pathExists(candidate.path))) continue;
    const text = await readTextFile(candidate.path);
    if (candidate.format === 'jsonl') {
      const documents = parseKobestJsonl(text, task, candidate.path);
      return { task, split, file: candidate.path, format: 'jsonl', documents, droppedRows: 0 };
    }
    const { documents, droppedRows } = parseKobestTsv(text, task, candidate.path, split);
    return { task, split, file: candidate.path, format: 'tsv', documents, droppedRows };
  }
  const present = await availableKobestSplits(dir, task);
  throw new PolyquantError(ERROR_CODES.NOT_FOUND, `no ${split} split of KOBEST ${task}`, {
    file: dir,
    hint:
      `looked for ${candidates.map((candidate) => candidate.path).join(', ')}; ` +
      (present.length === 0 ? `no split of ${task} is there` : `${task} has ${present.join(', ')} there`),
  });
}

async function readTextFile(path: string): Promise<string> {
  const bytes = await readWholeFile(path, 'a KOBEST split file', MAX_SPLIT_FILE_BYTES);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw malformed(path, 'file is not valid UTF-8');
  }
}

function labelRange<Name extends KobestTaskName>(task: KobestTask<Name>): string {
  const names = task.labelNames;
  return `0–${names.length - 1} (${names.map((name, index) => `${index} = ${name}`).join(', ')})`;
}

function isLabel<Name extends KobestTaskName>(task: KobestTask<Name>, label: number): boolean {
  return Number.isSafeInteger(label) && label >= 0 && label < task.labelNames.length;
}

/**
 * Checks one record's text fields against the task and builds the typed document (the label is checked
 * by the caller, which knows where it came from). `where` prefixes every problem (`line 12`), so errors
 * read `<file>: line 12: field "premise" …`.
 */
function buildDocument<Name extends KobestTaskName>(
  task: KobestTask<Name>,
  file: string,
  where: string,
  idx: number,
  id: number | null,
  label: number,
  values: Readonly<Record<string, unknown>>,
): KobestDocuments[Name] {
  const document: Record<string, unknown> = { idx, id, label };
  for (const field of task.fields as readonly string[]) {
    const value = values[field];
    if (value === undefined) throw malformed(file, `${where}: field "${field}" is missing`);
    if (typeof value !== 'string') {
      throw malformed(file, `${where}: field "${field}" must be a string, got ${JSON.stringify(value)}`);
    }
    const problem = task.checkField?.(field, value);
    if (problem !== undefined) throw malformed(file, `${where}: field "${field}" ${problem}`);
    document[field] = value;
  }
  // Every field of KobestDocuments[Name] was checked just above (task.fields lists them all).
  return document as unknown as KobestDocuments[Name];
}

/** Our JSONL layout: one HF record per line, in HF order. Blank lines are skipped. */
export function parseKobestJsonl<Name extends KobestTaskName>(
  text: string,
  taskName: Name,
  file: string,
): KobestDocuments[Name][] {
  const task: KobestTask<Name> = KOBEST_TASKS[taskName];
  const documents: KobestDocuments[Name][] = [];
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index]!.replace(/\r$/, '');
    if (line.trim() === '') continue;
    const where = `line ${index + 1}`;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw malformed(file, `${where}: not valid JSON: ${reason}`);
    }
    if (!isRecord(record)) throw malformed(file, `${where}: expected a JSON object, got ${JSON.stringify(record)}`);
    const position = documents.length;
    // `idx` is the HF row order; the harness shuffles by position, so a reordered file would silently
    // change which documents `--limit` keeps. Refuse it rather than guess.
    if (record.idx !== undefined && record.idx !== position) {
      throw malformed(file, `${where}: field "idx" is ${JSON.stringify(record.idx)} but this is record ${position}`, {
        hint: 'records must stay in HF order; drop "idx" from a file you subset or reorder on purpose',
      });
    }
    const id = record.id;
    if (id !== undefined && id !== null && !Number.isSafeInteger(id)) {
      throw malformed(file, `${where}: field "id" must be an integer or null, got ${JSON.stringify(id)}`);
    }
    const label = record.label;
    if (label === undefined) throw malformed(file, `${where}: field "label" is missing`);
    if (typeof label !== 'number' || !isLabel(task, label)) {
      throw malformed(file, `${where}: field "label" must be a label ${labelRange(task)}, got ${JSON.stringify(label)}`);
    }
    documents.push(buildDocument(task, file, where, position, (id ?? null) as number | null, label, record));
  }
  return documents;
}

const PANDAS_TRUE = new Set(['True', 'TRUE', 'true']);
const PANDAS_FALSE = new Set(['False', 'FALSE', 'false']);
/** pandas reads an integer cell with optional sign and surrounding spaces. */
const INTEGER_CELL = /^ *[+-]?\d+ *$/;

/**
 * An official KoBEST TSV as kobest_v1.py loads it: pandas parsing, `dropna()` over every column,
 * HF field ← TSV column, label mapping (booleans; COPA's 1-based Answer − 1). `split` picks SentiNeg's
 * `test_originated` columns (Text_origin / Label_origin) from the same test.tsv.
 */
export function parseKobestTsv<Name extends KobestTaskName>(
  text: string,
  taskName: Name,
  file: string,
  split: KobestSplit,
): { documents: KobestDocuments[Name][]; droppedRows: number } {
  checkSplitForTask(taskName, split);
  const task: KobestTask<Name> = KOBEST_TASKS[taskName];
  const layout: TsvLayout = split === 'test_originated' ? task.tsvOriginated! : task.tsv;
  const table = parseTsv(text, file);
  const columnIndex = new Map(table.header.map((name, index) => [name, index]));
  const required = [...Object.values(layout.fields), layout.label.column];
  const missing = required.filter((column) => !columnIndex.has(column));
  if (missing.length > 0) {
    throw malformed(
      file,
      `line 1: missing column${missing.length > 1 ? 's' : ''} ${missing.map((name) => JSON.stringify(name)).join(', ')} ` +
        `for KOBEST ${taskName}; the header has ${table.header.map((name) => JSON.stringify(name)).join(', ')}`,
    );
  }
  const idColumn = columnIndex.get('ID');
  const documents: KobestDocuments[Name][] = [];
  let droppedRows = 0;
  for (const record of table.records) {
    // kobest_v1.py calls dropna() on the whole frame: a NaN in any column, used or not, drops the row.
    if (record.cells.some(isPandasMissing)) {
      droppedRows++;
      continue;
    }
    const cell = (column: string): string => record.cells[columnIndex.get(column)!]!;
    const where = `line ${record.line}`;
    const rule = layout.label;
    const raw = cell(rule.column);
    let label: number;
    if (rule.kind === 'boolean') {
      if (PANDAS_TRUE.has(raw)) label = 1;
      else if (PANDAS_FALSE.has(raw)) label = 0;
      else {
        throw malformed(file, `${where}: column "${rule.column}" must be True or False (any of True/TRUE/true, False/FALSE/false), got ${JSON.stringify(raw)}`);
      }
    } else {
      if (!INTEGER_CELL.test(raw)) {
        throw malformed(file, `${where}: column "${rule.column}" must be an integer, got ${JSON.stringify(raw)}`);
      }
      label = Number.parseInt(raw.trim(), 10) - rule.offset;
      if (!isLabel(task, label)) {
        const range = `${rule.offset}–${task.labelNames.length - 1 + rule.offset}`;
        throw malformed(file, `${where}: column "${rule.column}" must be an integer ${range} (label ${labelRange(task)}${rule.offset === 0 ? '' : ` after subtracting ${rule.offset}`}), got ${JSON.stringify(raw)}`);
      }
    }
    const values: Record<string, string> = {};
    for (const [field, column] of Object.entries(layout.fields)) values[field] = cell(column);
    const idCell = idColumn === undefined ? undefined : record.cells[idColumn];
    const id = idCell !== undefined && INTEGER_CELL.test(idCell) ? Number.parseInt(idCell.trim(), 10) : null;
    documents.push(buildDocument(task, file, where, documents.length, id, label, values));
  }
  return { documents, droppedRows };
}
