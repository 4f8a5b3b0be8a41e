/**
 * The five KOBEST tasks as lm-evaluation-harness's `polyglot` branch defines them
 * (lm_eval/tasks/kobest.py @ d21107eb, the protocol of the polyglot-ko model cards; specs/eval.md §2a):
 * the document fields (HF `skt/kobest_v1` names), the official TSV columns they come from (the HF loader
 * kobest_v1.py; specs/eval.md §1), the prompt (`doc_to_text`), the continuations scored and the few-shot
 * target (`doc_to_target`). One table; loaders, request building and tests all read it.
 */

/** Python's str.isspace() set, so `.strip()` matches CPython (JS `trim` differs at U+001C–U+001F, U+0085, U+FEFF). */
const PYTHON_WHITESPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
  0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);

/** Python's `str.strip()` with no argument. */
export function pythonStrip(text: string): string {
  const codePoints = [...text];
  let start = 0;
  let end = codePoints.length;
  while (start < end && PYTHON_WHITESPACE.has(codePoints[start]!.codePointAt(0)!)) start++;
  while (end > start && PYTHON_WHITESPACE.has(codePoints[end - 1]!.codePointAt(0)!)) end--;
  return codePoints.slice(start, end).join('');
}

/** Python's `len(str)`: code points, not UTF-16 units (HellaSwag's acc_norm divides by it). */
export function pythonLength(text: string): number {
  let count = 0;
  for (const _ of text) count++;
  return count;
}

interface DocumentBase {
  /** 0-based row in the split file: the HF order, which the harness shuffles. */
  readonly idx: number;
  /** The original TSV `ID` column where the task has one (HellaSwag has none). */
  readonly id: number | null;
  /** The HF ClassLabel index. */
  readonly label: number;
}

export interface BoolqDocument extends DocumentBase {
  readonly paragraph: string;
  readonly question: string;
}
export interface CopaDocument extends DocumentBase {
  readonly premise: string;
  /** `원인` (cause) or `결과` (effect), possibly with trailing spaces: HF keeps them, kobest.py strips. */
  readonly question: string;
  readonly alternative_1: string;
  readonly alternative_2: string;
}
export interface WicDocument extends DocumentBase {
  readonly word: string;
  readonly context_1: string;
  readonly context_2: string;
}
export interface HellaswagDocument extends DocumentBase {
  readonly context: string;
  readonly ending_1: string;
  readonly ending_2: string;
  readonly ending_3: string;
  readonly ending_4: string;
}
export interface SentinegDocument extends DocumentBase {
  readonly sentence: string;
}

export interface KobestDocuments {
  boolq: BoolqDocument;
  copa: CopaDocument;
  wic: WicDocument;
  hellaswag: HellaswagDocument;
  sentineg: SentinegDocument;
}
export type KobestTaskName = keyof KobestDocuments;
export type KobestDocument = KobestDocuments[KobestTaskName];

/** The splits HF `skt/kobest_v1` has; `test_originated` (SentiNeg only) holds the un-negated test sentences. */
export const KOBEST_SPLITS = ['train', 'validation', 'test', 'test_originated'] as const;
export type KobestSplit = (typeof KOBEST_SPLITS)[number];

/** How one TSV column becomes the label (kobest_v1.py's label mapping). */
export type TsvLabelRule =
  /** pandas parses TRUE/True/true and FALSE/False/false as booleans: False → 0, True → 1. */
  | { readonly kind: 'boolean'; readonly column: string }
  /** An integer column, minus `offset` (COPA's Answer is 1-based). */
  | { readonly kind: 'integer'; readonly column: string; readonly offset: number };

export interface TsvLayout {
  /** HF field ← TSV column. */
  readonly fields: Readonly<Record<string, string>>;
  readonly label: TsvLabelRule;
}

export interface KobestTask<Name extends KobestTaskName> {
  readonly name: Name;
  /** The harness task name. */
  readonly harnessName: `kobest_${Name}`;
  /** HF ClassLabel names, in label order. */
  readonly labelNames: readonly string[];
  /** The string fields every document has (HF names), in HF column order. */
  readonly fields: readonly Exclude<keyof KobestDocuments[Name], keyof DocumentBase>[];
  /** Folder of the official TSVs in SKT-LSL/KoBEST_datarepo `v1.0/`. */
  readonly tsvFolder: string;
  /** TSV layout per split file (`test_originated` reads SentiNeg's test.tsv through other columns). */
  readonly tsv: TsvLayout;
  readonly tsvOriginated?: TsvLayout;
  /** Checks beyond "is a string" that the harness would otherwise fail on; returns a problem or undefined. */
  readonly checkField?: (field: string, value: string) => string | undefined;
  /** `doc_to_text`: the context scored continuations follow. */
  docToText(doc: KobestDocuments[Name]): string;
  /** The continuations `construct_requests` scores; index = predicted label. */
  continuations(doc: KobestDocuments[Name]): readonly string[];
  /** `doc_to_target`: what follows the context in a few-shot example. */
  docToTarget(doc: KobestDocuments[Name]): string;
  /** HellaSwag only: the strings acc_norm divides by (the choices without the leading space). */
  normalizationTexts?(doc: KobestDocuments[Name]): readonly string[];
}

/** BoolQ and WiC answer with " 아니오" (0) / " 예" (1); kobest.py's `{0: "아니오", 1: "예"}`. */
const NO_YES = [' 아니오', ' 예'] as const;
/** SentiNeg: " 부정" (negative, 0) / " 긍정" (positive, 1). */
const NEGATIVE_POSITIVE = [' 부정', ' 긍정'] as const;
/** COPA's connector: "because" for a cause question, "so" for an effect one (kobest.py COPA.doc_to_text). */
const COPA_CONNECTORS: Readonly<Record<string, string>> = { 원인: '왜냐하면', 결과: '그래서' };

function pick(choices: readonly string[], label: number): string {
  const choice = choices[label];
  if (choice === undefined) throw new RangeError(`label ${label} outside ${choices.length} choices`);
  return choice;
}

const boolq: KobestTask<'boolq'> = {
  name: 'boolq',
  harnessName: 'kobest_boolq',
  labelNames: ['False', 'True'],
  fields: ['paragraph', 'question'],
  tsvFolder: 'BoolQ',
  tsv: { fields: { paragraph: 'Text', question: 'Question' }, label: { kind: 'boolean', column: 'Answer' } },
  // Note the trailing space: the model scores "…답변:", "Ġ" → "Ġ아니", "오" (specs/eval.md §2a).
  docToText: (doc) => `${doc.paragraph} 질문: ${doc.question} 답변: `,
  continuations: () => NO_YES,
  docToTarget: (doc) => pick(NO_YES, doc.label),
};

const copa: KobestTask<'copa'> = {
  name: 'copa',
  harnessName: 'kobest_copa',
  labelNames: ['alternative_1', 'alternative_2'],
  fields: ['premise', 'question', 'alternative_1', 'alternative_2'],
  tsvFolder: 'COPA',
  tsv: {
    fields: { premise: 'sentence', question: 'question', alternative_1: '1', alternative_2: '2' },
    label: { kind: 'integer', column: 'Answer', offset: 1 },
  },
  checkField: (field, value) =>
    field === 'question' && COPA_CONNECTORS[pythonStrip(value)] === undefined
      ? `must be 원인 or 결과 after strip(), got ${JSON.stringify(value)}`
      : undefined,
  // `premise + f" {connector}"`: one space (current lm-eval main puts two; specs/eval.md §2c).
  docToText: (doc) => `${doc.premise} ${COPA_CONNECTORS[pythonStrip(doc.question)]!}`,
  continuations: (doc) => [` ${doc.alternative_1}`, ` ${doc.alternative_2}`],
  docToTarget: (doc) => ` ${doc.label === 0 ? doc.alternative_1 : doc.alternative_2}`,
};

const wic: KobestTask<'wic'> = {
  name: 'wic',
  harnessName: 'kobest_wic',
  labelNames: ['False', 'True'],
  fields: ['word', 'context_1', 'context_2'],
  tsvFolder: 'WiC',
  tsv: {
    fields: { word: 'Target', context_1: 'SENTENCE1', context_2: 'SENTENCE2' },
    label: { kind: 'boolean', column: 'ANSWER' },
  },
  // The sentences keep their [brackets]; the word itself goes in bare.
  docToText: (doc) => `문장1: ${doc.context_1} 문장2: ${doc.context_2} 두 문장에서 ${doc.word}가 같은 뜻으로 쓰였나?`,
  continuations: () => NO_YES,
  docToTarget: (doc) => pick(NO_YES, doc.label),
};

const hellaswagEndings = (doc: HellaswagDocument): readonly string[] => [
  doc.ending_1,
  doc.ending_2,
  doc.ending_3,
  doc.ending_4,
];

const hellaswag: KobestTask<'hellaswag'> = {
  name: 'hellaswag',
  harnessName: 'kobest_hellaswag',
  labelNames: ['ending_1', 'ending_2', 'ending_3', 'ending_4'],
  fields: ['context', 'ending_1', 'ending_2', 'ending_3', 'ending_4'],
  tsvFolder: 'HellaSwag',
  tsv: {
    fields: { context: 'context', ending_1: 'choice1', ending_2: 'choice2', ending_3: 'choice3', ending_4: 'choice4' },
    label: { kind: 'integer', column: 'label', offset: 0 },
  },
  // A MultipleChoiceTask: query = "문장: {context}", each choice scored as " " + choice, target " " + gold.
  docToText: (doc) => `문장: ${doc.context}`,
  continuations: (doc) => hellaswagEndings(doc).map((ending) => ` ${ending}`),
  docToTarget: (doc) => ` ${pick(hellaswagEndings(doc), doc.label)}`,
  normalizationTexts: hellaswagEndings,
};

const sentineg: KobestTask<'sentineg'> = {
  name: 'sentineg',
  harnessName: 'kobest_sentineg',
  labelNames: ['negative', 'positive'],
  fields: ['sentence'],
  tsvFolder: 'SentiNeg',
  tsv: { fields: { sentence: 'Text' }, label: { kind: 'integer', column: 'Label', offset: 0 } },
  tsvOriginated: { fields: { sentence: 'Text_origin' }, label: { kind: 'integer', column: 'Label_origin', offset: 0 } },
  docToText: (doc) => `문장: ${doc.sentence} 긍부정:`,
  continuations: () => NEGATIVE_POSITIVE,
  docToTarget: (doc) => pick(NEGATIVE_POSITIVE, doc.label),
};

export const KOBEST_TASKS: { readonly [Name in KobestTaskName]: KobestTask<Name> } = {
  boolq,
  copa,
  wic,
  hellaswag,
  sentineg,
};

/** Task names in table order (the order `runKobest` evaluates them in). */
export const KOBEST_TASK_NAMES = Object.keys(KOBEST_TASKS) as KobestTaskName[];

export function isKobestTaskName(name: string): name is KobestTaskName {
  return Object.hasOwn(KOBEST_TASKS, name);
}

/** The TSV file name of a split in KoBEST_datarepo (`dev` is HF's `validation`). */
export function tsvFileName(split: KobestSplit): string {
  if (split === 'validation') return 'dev.tsv';
  if (split === 'test_originated') return 'test.tsv';
  return `${split}.tsv`;
}
