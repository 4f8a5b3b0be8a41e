/**
 * KOBEST evaluation with the lm-evaluation-harness `polyglot` branch protocol (specs/eval.md §1–§3):
 * task table, loaders (our JSONL and the official TSVs), request building, metrics and the runner.
 */
export {
  availableKobestSplits,
  type KobestFileFormat,
  type KobestSplitData,
  kobestSplitCandidates,
  loadKobestSplit,
  MAX_SPLIT_FILE_BYTES,
  parseKobestJsonl,
  parseKobestTsv,
} from './load.js';
export { accuracy, argmax, macroF1, meanStderr } from './metrics.js';
export { KOBEST_SAMPLE_SCHEMA, type KobestSampleRecord, type KobestSampleSide, kobestSampleRecords, kobestSamplesJsonl } from './samples.js';
export {
  buildKobestRequests,
  FEWSHOT_SEPARATOR,
  fewshotContext,
  HARNESS_SHUFFLE_SEED,
  type KobestPlan,
  type KobestRequest,
  planKobest,
  resolveLimit,
} from './requests.js';
export {
  type KobestDocumentResult,
  type KobestEngine,
  type KobestInputs,
  type KobestProgress,
  type KobestReport,
  type KobestRunOptions,
  type KobestTaskResult,
  keptContextLength,
  loadKobestInputs,
  runKobest,
  scoreKobestRequests,
  summarizeKobest,
} from './run.js';
export {
  type BoolqDocument,
  type CopaDocument,
  type HellaswagDocument,
  isKobestTaskName,
  KOBEST_SPLITS,
  KOBEST_TASK_NAMES,
  KOBEST_TASKS,
  type KobestDocument,
  type KobestDocuments,
  type KobestSplit,
  type KobestTask,
  type KobestTaskName,
  pythonLength,
  pythonStrip,
  type SentinegDocument,
  tsvFileName,
  type WicDocument,
} from './tasks.js';
export { isPandasMissing, PANDAS_NA_VALUES, parseTsv, type TsvRecord, type TsvTable } from './tsv.js';
