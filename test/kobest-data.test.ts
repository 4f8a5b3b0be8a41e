import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { loadKobestSplit, parseKobestJsonl, parseKobestTsv } from '../src/verify/kobest/load.js';
import { KOBEST_TASKS, type KobestTaskName } from '../src/verify/kobest/tasks.js';
import { parseTsv } from '../src/verify/kobest/tsv.js';
import { KOBEST_DATA_DIR } from './helpers/kobest-reference.js';
import { HAS_SHARED } from './helpers/shared.js';

/** Runs `body` and returns the PolyquantError it throws (failing the test if it throws nothing else). */
function caught(body: () => unknown): PolyquantError {
  try {
    body();
  } catch (error) {
    if (error instanceof PolyquantError) return error;
    throw error;
  }
  throw new Error('expected a PolyquantError');
}

async function caughtAsync(body: () => Promise<unknown>): Promise<PolyquantError> {
  try {
    await body();
  } catch (error) {
    if (error instanceof PolyquantError) return error;
    throw error;
  }
  throw new Error('expected a PolyquantError');
}

const scratch = mkdtempSync(join(tmpdir(), 'polyquant-kobest-data-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const tsv = (...rows: string[][]): string => `${rows.map((row) => row.join('\t')).join('\n')}\n`;

describe.skipIf(!HAS_SHARED)('the real KOBEST JSONL (data/kobest)', () => {
  // specs/eval.md §1 split sizes (train / validation).
  const sizes: Record<KobestTaskName, [number, number]> = {
    boolq: [3665, 700],
    copa: [3076, 500],
    wic: [3318, 610],
    hellaswag: [2029, 500],
    sentineg: [3649, 400],
  };
  for (const [task, [train, validation]] of Object.entries(sizes) as [KobestTaskName, [number, number]][]) {
    it(`loads ${task} with ${train} train and ${validation} validation documents in HF order`, async () => {
      const trainSplit = await loadKobestSplit(KOBEST_DATA_DIR, task, 'train');
      const validationSplit = await loadKobestSplit(KOBEST_DATA_DIR, task, 'validation');
      expect(trainSplit.format).toBe('jsonl');
      expect(trainSplit.documents).toHaveLength(train);
      expect(validationSplit.documents).toHaveLength(validation);
      expect(validationSplit.documents.every((document, index) => document.idx === index)).toBe(true);
      const labels = new Set(validationSplit.documents.map((document) => document.label));
      expect([...labels].sort()).toEqual(KOBEST_TASKS[task].labelNames.map((_, index) => index));
    });
  }

  it('keeps the HF text: pandas-stripped quotes, and COPA questions with their trailing space', async () => {
    const boolq = await loadKobestSplit(KOBEST_DATA_DIR, 'boolq', 'train');
    expect(boolq.documents[163]!.paragraph.startsWith('국제시장은 2014년')).toBe(true);
    const copa = await loadKobestSplit(KOBEST_DATA_DIR, 'copa', 'train');
    const spaced = copa.documents.filter((document) => document.question !== document.question.trim());
    expect(spaced).toHaveLength(6);
    expect(spaced.map((document) => document.question).sort()).toEqual(['결과 ', '원인 ', '원인 ', '원인 ', '원인 ', '원인 ']);
    const hellaswag = await loadKobestSplit(KOBEST_DATA_DIR, 'hellaswag', 'validation');
    expect(hellaswag.documents[0]!.id).toBeNull();
  });

  it('reports a missing test split as NOT_FOUND, naming what it looked for and the splits that exist', async () => {
    const error = await caughtAsync(() => loadKobestSplit(KOBEST_DATA_DIR, 'boolq', 'test'));
    expect(error.code).toBe(ERROR_CODES.NOT_FOUND);
    expect(error.message).toContain(join(KOBEST_DATA_DIR, 'boolq', 'test.jsonl'));
    expect(error.message).toContain(join(KOBEST_DATA_DIR, 'BoolQ', 'test.tsv'));
    expect(error.message).toContain('boolq has train, validation there');
  });
});

describe('the KOBEST loaders on disk', () => {
  it('reports a folder with no task files as NOT_FOUND listing every path tried', async () => {
    const empty = join(scratch, 'empty');
    mkdirSync(empty, { recursive: true });
    const error = await caughtAsync(() => loadKobestSplit(empty, 'wic', 'validation'));
    expect(error.code).toBe(ERROR_CODES.NOT_FOUND);
    expect(error.file).toBe(empty);
    for (const path of [join(empty, 'wic', 'validation.jsonl'), join(empty, 'WiC', 'dev.tsv'), join(empty, 'v1.0', 'WiC', 'dev.tsv')]) {
      expect(error.message).toContain(path);
    }
    expect(error.message).toContain('no split of wic is there');
  });

  it('reads the official TSV layout (dev.tsv is validation) when there is no JSONL', async () => {
    const root = join(scratch, 'tsv-layout');
    mkdirSync(join(root, 'v1.0', 'BoolQ'), { recursive: true });
    writeFileSync(
      join(root, 'v1.0', 'BoolQ', 'dev.tsv'),
      tsv(['ID', 'Text', 'Question', 'Answer'], ['1', '지문', '질문인가?', 'TRUE'], ['2', '지문 둘', '아닌가?', 'False']),
    );
    const split = await loadKobestSplit(root, 'boolq', 'validation');
    expect(split.format).toBe('tsv');
    expect(split.file).toBe(join(root, 'v1.0', 'BoolQ', 'dev.tsv'));
    expect(split.documents).toEqual([
      { idx: 0, id: 1, label: 1, paragraph: '지문', question: '질문인가?' },
      { idx: 1, id: 2, label: 0, paragraph: '지문 둘', question: '아닌가?' },
    ]);
  });

  it('refuses test_originated for a task other than sentineg', async () => {
    const error = await caughtAsync(() => loadKobestSplit(scratch, 'boolq', 'test_originated'));
    expect(error.code).toBe(ERROR_CODES.USAGE);
  });

  it('rejects invalid UTF-8 with the file named', async () => {
    const root = join(scratch, 'bad-utf8');
    mkdirSync(join(root, 'sentineg'), { recursive: true });
    const path = join(root, 'sentineg', 'validation.jsonl');
    writeFileSync(path, Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a]));
    const error = await caughtAsync(() => loadKobestSplit(root, 'sentineg', 'validation'));
    expect(error.code).toBe(ERROR_CODES.MALFORMED);
    expect(error.file).toBe(path);
  });
});

describe('parseKobestJsonl', () => {
  const file = '/data/kobest/copa/validation.jsonl';
  const copaRecord = { premise: '전쟁이 시작되었다.', question: '결과', alternative_1: '가', alternative_2: '나', label: 1 };
  const lines = (...records: unknown[]): string => records.map((record) => JSON.stringify(record)).join('\n');

  it('builds typed documents, taking idx from the row and id from the record', () => {
    const documents = parseKobestJsonl(lines({ idx: 0, id: 7, ...copaRecord }, copaRecord), 'copa', file);
    expect(documents).toEqual([
      { idx: 0, id: 7, label: 1, premise: '전쟁이 시작되었다.', question: '결과', alternative_1: '가', alternative_2: '나' },
      { idx: 1, id: null, label: 1, premise: '전쟁이 시작되었다.', question: '결과', alternative_1: '가', alternative_2: '나' },
    ]);
  });

  const cases: [string, unknown, RegExp][] = [
    ['a missing field', { ...copaRecord, premise: undefined }, /line 2: field "premise" is missing/],
    ['a field of the wrong type', { ...copaRecord, alternative_2: 3 }, /line 2: field "alternative_2" must be a string, got 3/],
    ['a label out of range', { ...copaRecord, label: 2 }, /line 2: field "label" must be a label 0–1 \(0 = alternative_1, 1 = alternative_2\), got 2/],
    ['a label that is not a number', { ...copaRecord, label: '1' }, /line 2: field "label" must be a label/],
    ['a missing label', { ...copaRecord, label: undefined }, /line 2: field "label" is missing/],
    ['a COPA question other than 원인/결과', { ...copaRecord, question: '이유' }, /line 2: field "question" must be 원인 or 결과/],
    ['an idx out of HF order', { ...copaRecord, idx: 5 }, /line 2: field "idx" is 5 but this is record 1/],
    ['a non-integer id', { ...copaRecord, id: 'x' }, /line 2: field "id" must be an integer or null/],
    ['a line that is not an object', [1, 2], /line 2: expected a JSON object/],
  ];
  for (const [what, record, message] of cases) {
    it(`rejects ${what} with a MALFORMED error naming the file, line and field`, () => {
      const error = caught(() => parseKobestJsonl(lines(copaRecord, record), 'copa', file));
      expect(error.code).toBe(ERROR_CODES.MALFORMED);
      expect(error.file).toBe(file);
      expect(error.message).toMatch(message);
    });
  }

  it('rejects a line that is not JSON, naming the line', () => {
    const error = caught(() => parseKobestJsonl(`${JSON.stringify(copaRecord)}\n\n{"premise": `, 'copa', file));
    expect(error.message).toMatch(/line 3: not valid JSON/);
  });

  it('accepts a COPA question with a trailing space, as the HF data has it', () => {
    const [document] = parseKobestJsonl(lines({ ...copaRecord, question: '원인 ' }), 'copa', file);
    expect(document!.question).toBe('원인 ');
  });
});

describe('parseTsv (pandas read_csv quoting)', () => {
  it('strips a leading quoted span and keeps the rest of the cell literally', () => {
    const table = parseTsv(tsv(['A', 'B'], ['"국제시장"은 영화이다.', '안에 "따옴표" 그대로']), 'x.tsv');
    expect(table.records[0]!.cells).toEqual(['국제시장은 영화이다.', '안에 "따옴표" 그대로']);
  });

  it('reads "" inside a quoted span as one quote, and keeps tabs and newlines inside it', () => {
    const text = 'A\tB\n"가위로 ""v"" 모양"\t"둘\t셋\n넷"\n다음\t줄\n';
    const table = parseTsv(text, 'x.tsv');
    expect(table.records.map((record) => [record.line, ...record.cells])).toEqual([
      [2, '가위로 "v" 모양', '둘\t셋\n넷'],
      [4, '다음', '줄'],
    ]);
  });

  it('handles CRLF, a BOM and blank lines', () => {
    const table = parseTsv('\uFEFFA\tB\r\n\r\n1\t2\r\n   \r\n3\t4', 'x.tsv');
    expect(table.header).toEqual(['A', 'B']);
    expect(table.records.map((record) => [record.line, ...record.cells])).toEqual([
      [3, '1', '2'],
      [5, '3', '4'],
    ]);
  });

  it('pads a short record with missing cells and rejects a long one naming the line', () => {
    expect(parseTsv(tsv(['A', 'B', 'C'], ['1']), 'x.tsv').records[0]!.cells).toEqual(['1', undefined, undefined]);
    const error = caught(() => parseTsv(tsv(['A', 'B'], ['1', '2'], ['1', '2', '3']), 'x.tsv'));
    expect(error.code).toBe(ERROR_CODES.MALFORMED);
    expect(error.message).toMatch(/^x\.tsv: line 3: expected 2 tab-separated cells, saw 3/);
  });

  it('rejects a quoted span that never closes', () => {
    const error = caught(() => parseTsv('A\n"열린 채로\n끝', 'x.tsv'));
    expect(error.message).toMatch(/line 2: end of file inside a quoted cell/);
  });

  it('rejects an empty file', () => {
    expect(caught(() => parseTsv('', 'x.tsv')).message).toMatch(/empty/);
  });
});

describe('parseKobestTsv (kobest_v1.py semantics)', () => {
  it('reads BoolQ answers TRUE/True/true and FALSE/False/false as booleans, case and all', () => {
    const text = tsv(
      ['ID', 'Text', 'Question', 'Answer'],
      ['1', 't', 'q', 'TRUE'],
      ['2', 't', 'q', 'True'],
      ['3', 't', 'q', 'FALSE'],
      ['4', 't', 'q', 'False'],
      ['5', 't', 'q', 'true'],
    );
    const { documents } = parseKobestTsv(text, 'boolq', 'BoolQ/train.tsv', 'train');
    expect(documents.map((document) => document.label)).toEqual([1, 1, 0, 0, 1]);
  });

  it('maps WiC columns and booleans, keeping the [brackets] in the sentences', () => {
    const text = tsv(
      ['ID', 'Target', 'SENTENCE1', 'SENTENCE2', 'ANSWER', 'Dictionary 1', 'Link 1', 'Dictionary 2', 'Link2'],
      ['9', '실정', '[실정]으로', '[실정]이다', 'FALSE', '1', 'l', '4', 'l'],
    );
    const { documents } = parseKobestTsv(text, 'wic', 'WiC/test.tsv', 'test');
    expect(documents).toEqual([{ idx: 0, id: 9, label: 0, word: '실정', context_1: '[실정]으로', context_2: '[실정]이다' }]);
  });

  it('maps COPA columns, turns the 1-based Answer into a 0-based label and keeps the question as is', () => {
    const text = tsv(
      ['ID', 'sentence', 'question', '1', '2', 'Answer'],
      ['1', '전제.', '원인 ', '하나.', '둘.', '2'],
      ['2', '전제.', '결과', '하나.', '둘.', '1'],
    );
    const { documents } = parseKobestTsv(text, 'copa', 'COPA/train.tsv', 'train');
    expect(documents.map((document) => [document.question, document.label, document.alternative_2])).toEqual([
      ['원인 ', 1, '둘.'],
      ['결과', 0, '둘.'],
    ]);
  });

  it('maps HellaSwag choice1..4 to ending_1..4 with no id, stripping a leading quoted span', () => {
    const text = tsv(
      ['context', 'choice1', 'choice2', 'choice3', 'choice4', 'label'],
      ['문맥', '"강" 단계', 'b', 'c', 'd', '3'],
    );
    const { documents } = parseKobestTsv(text, 'hellaswag', 'HellaSwag/dev.tsv', 'validation');
    expect(documents).toEqual([
      { idx: 0, id: null, label: 3, context: '문맥', ending_1: '강 단계', ending_2: 'b', ending_3: 'c', ending_4: 'd' },
    ]);
  });

  it('reads SentiNeg test as the negated sentences and test_originated as the originals', () => {
    const text = tsv(
      ['ID', 'Text', 'Label', 'Text_origin', 'Label_origin', 'Category_neg'],
      ['1', '택배사 정말 마음에 듬', '1', '택배사 정말 마음에 안들음', '0', '3'],
    );
    const test = parseKobestTsv(text, 'sentineg', 'SentiNeg/test.tsv', 'test').documents;
    const originated = parseKobestTsv(text, 'sentineg', 'SentiNeg/test.tsv', 'test_originated').documents;
    expect(test).toEqual([{ idx: 0, id: 1, label: 1, sentence: '택배사 정말 마음에 듬' }]);
    expect(originated).toEqual([{ idx: 0, id: 1, label: 0, sentence: '택배사 정말 마음에 안들음' }]);
  });

  it('drops rows with a missing or NA cell in any column, as dropna() does, and numbers the rest', () => {
    const text = tsv(['ID', 'Text', 'Label'], ['1', '좋다', '1'], ['2', '', '0'], ['3', '싫다', 'NA'], ['4', 'NaN', '0'], ['5', '별로', '0']);
    const { documents, droppedRows } = parseKobestTsv(`${text}6\t짧은 줄\n`, 'sentineg', 'SentiNeg/train.tsv', 'train');
    expect(droppedRows).toBe(4);
    expect(documents.map((document) => [document.idx, document.id, document.sentence])).toEqual([
      [0, 1, '좋다'],
      [1, 5, '별로'],
    ]);
  });

  const bad: [string, KobestTaskName, string, RegExp][] = [
    [
      'a boolean answer spelled otherwise',
      'boolq',
      tsv(['ID', 'Text', 'Question', 'Answer'], ['1', 't', 'q', 'Yes']),
      /line 2: column "Answer" must be True or False .*got "Yes"/,
    ],
    [
      'a COPA Answer out of 1–2',
      'copa',
      tsv(['ID', 'sentence', 'question', '1', '2', 'Answer'], ['1', 's', '원인', 'a', 'b', '3']),
      /line 2: column "Answer" must be an integer 1–2 .*got "3"/,
    ],
    [
      'a HellaSwag label that is not an integer',
      'hellaswag',
      tsv(['context', 'choice1', 'choice2', 'choice3', 'choice4', 'label'], ['c', 'a', 'b', 'c', 'd', '1.5']),
      /line 2: column "label" must be an integer, got "1.5"/,
    ],
    [
      'a COPA question that is neither 원인 nor 결과',
      'copa',
      tsv(['ID', 'sentence', 'question', '1', '2', 'Answer'], ['1', 's', '왜', 'a', 'b', '1']),
      /line 2: field "question" must be 원인 or 결과/,
    ],
    ['missing columns', 'wic', tsv(['ID', 'Target', 'ANSWER'], ['1', 'w', 'TRUE']), /line 1: missing columns "SENTENCE1", "SENTENCE2"/],
  ];
  for (const [what, task, text, message] of bad) {
    it(`rejects ${what} with a MALFORMED error naming the file and line`, () => {
      const error = caught(() => parseKobestTsv(text, task, `${task}.tsv`, 'train'));
      expect(error.code).toBe(ERROR_CODES.MALFORMED);
      expect(error.file).toBe(`${task}.tsv`);
      expect(error.message).toMatch(message);
    });
  }
});
