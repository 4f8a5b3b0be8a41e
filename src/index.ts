/**
 * polyquant's library entry. The CLI is a thin layer over these calls.
 */
export { ERROR_CODES, type ErrorCode, EXIT_CODES, isPolyquantError, PolyquantError } from './errors.js';
export { AtomicFile, ReadableFile, writeAtomically } from './io/file.js';
export { DTYPES, DTYPE_NAMES, type DType, type DTypeInfo } from './tensor/dtype.js';
export type { TensorRef, TensorToWrite } from './readers/tensor-ref.js';
export {
  type Checkpoint,
  parameterCount,
  readCheckpoint,
  type ReadCheckpointOptions,
  type SkippedTensor,
  type WeightsFormat,
  type WeightsPreference,
} from './readers/checkpoint.js';
export { readSafetensors, type SafetensorsFile, writeSafetensors } from './readers/safetensors.js';
export { readTorchBin, type TorchBinFile, writeTorchBin } from './readers/torch-bin.js';
export {
  loadTokenizer,
  readTokenizerFiles,
  summariseTokenizer,
  type TextTokenizer,
  type TokenizerFiles,
  type TokenizerSummary,
} from './readers/tokenizer.js';
export { expectedTensors, type NeoXConfig, normaliseNeoXConfig, SUPPORTED_ARCHITECTURES } from './arch/gpt-neox.js';
export { INSPECT_SCHEMA, type InspectReport, inspectHf } from './inspect/hf.js';
export { type AnyInspectReport, inspectPath } from './inspect/index.js';
export { INSPECT_GGUF_SCHEMA, type GgufInspectReport, inspectGguf } from './inspect/gguf.js';
export { convertToGguf, type ConvertToGgufOptions, type GgufConversionPlan } from './converters/gguf/convert.js';
export { type ImportanceMatrix, readImatrix } from './converters/gguf/imatrix.js';
export { computeImatrix, type ImatrixEntry, type ImatrixOptions, type ImatrixResult, importanceOf } from './calibrate/imatrix.js';
export { writeImatrixGguf } from './calibrate/imatrix-file.js';
export { scoreBaseline, verify, type VerifyOptions } from './verify/verify.js';
export { BaselineSession, type BaselineSessionOptions, type BaselineSessionStats } from './verify/baseline-session.js';
export { VERIFY_SCHEMA, type VerifyReport } from './verify/report.js';
export { createReferenceEngine, type ReferenceEngine } from './verify/engines/reference.js';
export { createLlamaCppEngine, type LlamaCppEngine, type LlamaCppEngineOptions } from './verify/engines/llamacpp.js';
export { runKobest } from './verify/kobest/index.js';
export { perplexity, perplexityOfFile } from './verify/perplexity.js';
export { mergeSweeps, runSweep, type SweepOptions, type SweepProgress, type SweepRun, writeSweepReport } from './sweep/sweep.js';
export { SWEEP_SCHEMA, type SweepReport } from './sweep/report.js';
export { SWEEP_CELL_SCHEMA, type SweepCellRecord } from './sweep/records.js';
export { planGrid, SWEEP_FORMATS, SWEEP_PRESETS } from './sweep/grid.js';
export { type SynthOptions, synthCheckpoint } from './synth/synth.js';
export { SYNTH_PRESETS, type SynthPresetName } from './synth/presets.js';
export * from './quant/index.js';
export { QuantPool, type QuantPoolOptions } from './quant/pool.js';
export { GGUF_FILE_TYPES, type GgufFileType, tensorTypeFor } from './quant/policy.js';
export type { Engine, ScoreOptions, ScoreResult } from './verify/engine.js';
