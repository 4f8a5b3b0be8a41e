/**
 * What a sweep keeps on disk: one JSON file per cell (`DIR/cells/<format>-<type>.json`, schema
 * `polyquant.sweep-cell/1`), written under a temp name and renamed (io/file.ts), so a killed sweep leaves
 * each cell either complete or absent. A cell is found again by its key: sha256 over the settings key
 * (the model's content hash, the evaluation settings that change numbers, the polyquant version) and the
 * cell id. Thresholds are not part of either key: they decide pass/fail, never a number, so a rerun with
 * other thresholds gates the stored numbers again instead of recomputing them.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { ioError, writeAtomically } from '../io/file.js';
import type { VerifyReport } from '../verify/report.js';
import { type Check, gateSections, type Thresholds } from '../verify/thresholds.js';
import type { SweepFormat } from './grid.js';

export const SWEEP_CELL_SCHEMA = 'polyquant.sweep-cell/1';
/** Bump when a cell's numbers for the same settings would change (part of every settings key). */
const KEY_REVISION = 1;
export const CELLS_FOLDER = 'cells';

/** The package root (src/sweep or dist/sweep → two levels up). */
const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** polyquant's version (package.json): part of every settings key, since another version may score differently. */
export const POLYQUANT_VERSION: string = (() => {
  try {
    const parsed = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version?: unknown };
    return typeof parsed.version === 'string' ? parsed.version : 'unknown';
  } catch {
    return 'unknown';
  }
})();

/** A file an evaluation reads, by name and content. */
export interface HashedFile {
  readonly name: string;
  readonly sha256: string;
}

/** Everything about an evaluation that can change a cell's numbers (and nothing that cannot, such as threads or thresholds). */
export interface SweepEvaluation {
  readonly ppl: readonly HashedFile[];
  readonly ctx: number;
  readonly protocol: string;
  readonly stride: number | null;
  readonly maxWindows: number | null;
  readonly kld: boolean;
  readonly kobest: {
    readonly files: readonly HashedFile[];
    readonly tasks: readonly string[];
    readonly shots: readonly number[];
    readonly split: string;
    readonly limit: number | null;
  } | null;
  /** verify's --device: a GPU backend may score differently from the CPU one. */
  readonly device: string;
  /** The GGUF type an HF baseline too large for the reference engine is run from. */
  readonly baselineType: string;
  /** `--calibrate`: the calibration texts (by content) and chunk limit of the calibrated cells; absent without. */
  readonly calibration?: { readonly texts: readonly HashedFile[]; readonly chunks: number | null } | undefined;
}

export interface SweepModel {
  /** The model folder as this sweep found it (absolute). */
  readonly path: string;
  /** sha256 of its content (verify/baseline-cache.ts modelContentHash). */
  readonly sha256: string;
  /** Parameters of the checkpoint: the denominator of every cell's bits per weight. */
  readonly parameters: number;
}

const sha256 = (value: unknown): string => createHash('sha256').update(JSON.stringify(value)).digest('hex');

/** The key of a sweep's settings: every cell of one sweep, on any machine or shard, has it. */
export function settingsKey(model: SweepModel, evaluation: SweepEvaluation, version: string = POLYQUANT_VERSION): string {
  return sha256({ revision: KEY_REVISION, model: model.sha256, evaluation, polyquant: version });
}

export function cellKey(settings: string, id: string): string {
  return sha256({ settings, cell: id });
}

export interface SweepKobestSummary {
  readonly task: string;
  readonly shots: number;
  readonly n: number;
  readonly deltaAcc: number | null;
  readonly deltaAccCi: readonly [number | null, number | null];
  readonly deltaF1: number | null;
  readonly deltaF1Ci: readonly [number | null, number | null];
}

/**
 * A cell's comparison in a few numbers. With one perplexity text they are that text's; with several,
 * ΔPPL and p99 KLD are the worst text's, mean KLD and top-1 the position-weighted means over all texts.
 */
export interface SweepCellSummary {
  readonly deltaPplPct: number | null;
  readonly kldMean: number | null;
  readonly kldP99: number | null;
  readonly top1: number | null;
  readonly positions: number;
  readonly kobest: readonly SweepKobestSummary[];
}

export interface SweepCellRecord {
  readonly schema: typeof SWEEP_CELL_SCHEMA;
  readonly id: string;
  readonly format: SweepFormat;
  readonly type: string;
  /** sha256 of the settings key and the id. */
  readonly key: string;
  readonly settingsKey: string;
  readonly model: SweepModel;
  readonly settings: SweepEvaluation;
  readonly polyquant: string;
  /** Every cell id of the sweep this cell ran in (a report names the ones no folder holds). */
  readonly grid: readonly string[];
  /** `I/N` when it ran in a shard. */
  readonly shard: string | null;
  readonly status: 'done' | 'error';
  /** Why the cell could not be measured (status `error`): a PolyquantError's code and message. */
  readonly error: { readonly code: string; readonly message: string } | null;
  /** The converted file or folder (its name under DIR/artifacts when kept); planned: simulate cells write none, their bytes are the plan's. */
  readonly artifact: { readonly name: string; readonly kept: boolean; readonly planned: boolean } | null;
  /** Bytes of the weights as shipped: the GGUF file, the ONNX model file and its data files, the WebGPU shards. */
  readonly bytes: number | null;
  /** bytes × 8 / the checkpoint's parameters. */
  readonly bitsPerWeight: number | null;
  readonly convertSeconds: number | null;
  readonly verifySeconds: number | null;
  /** The engine and device the candidate ran on (and the GPU backend or WebGPU adapter, when one ran it). */
  readonly engine: string | null;
  readonly device: string | null;
  readonly gpu?: string;
  readonly adapter?: string;
  readonly summary: SweepCellSummary | null;
  readonly thresholds: Thresholds;
  readonly checks: readonly Check[];
  readonly verdict: 'pass' | 'fail' | 'error';
  /** The failed checks in words. */
  readonly failed: readonly string[];
  /** verify's whole report (schema polyquant.verify/1), paths of deleted artifacts relative to the sweep. */
  readonly report: VerifyReport | null;
  readonly created: string;
}

const finite = (value: number | undefined | null): number | null => (typeof value === 'number' && Number.isFinite(value) ? value : null);

export function summarise(report: VerifyReport): SweepCellSummary {
  const sections = report.perplexity;
  let positions = 0;
  let kldWeighted = 0;
  let top1Weighted = 0;
  let deltaPpl = Number.NEGATIVE_INFINITY;
  let p99 = Number.NEGATIVE_INFINITY;
  let kld = sections.length > 0;
  for (const section of sections) {
    const { comparison } = section;
    positions += comparison.positions;
    top1Weighted += comparison.top1_agreement * comparison.positions;
    deltaPpl = Math.max(deltaPpl, comparison.delta_ppl_pct);
    if (comparison.kld === null) kld = false;
    else {
      kldWeighted += comparison.kld.mean * comparison.positions;
      p99 = Math.max(p99, comparison.kld.p99);
    }
    // NaN (non-finite output) must survive the max: Math.max(NaN, x) is NaN, so it does.
  }
  return {
    deltaPplPct: sections.length > 0 ? finite(deltaPpl) : null,
    kldMean: kld && positions > 0 ? finite(kldWeighted / positions) : null,
    kldP99: kld ? finite(p99) : null,
    top1: positions > 0 ? finite(top1Weighted / positions) : null,
    positions,
    kobest: report.kobest.map((section) => ({
      task: section.task,
      shots: section.shots,
      n: section.baseline.n,
      deltaAcc: finite(section.comparison.delta_acc),
      deltaAccCi: [finite(section.comparison.delta_acc_ci.low), finite(section.comparison.delta_acc_ci.high)],
      deltaF1: finite(section.comparison.delta_macro_f1),
      deltaF1Ci: [finite(section.comparison.delta_macro_f1_ci.low), finite(section.comparison.delta_macro_f1_ci.high)],
    })),
  };
}

export function describeFailures(checks: readonly Check[]): string[] {
  return checks.filter((check) => !check.passed).map((check) => `${check.where}: ${check.metric} ${check.value} (limit ${check.limit})`);
}

/** JSON has no NaN: verify's NaNs (non-finite output) come back as null. These fields are numbers again. */
const NUMBER_FIELDS = new Set([
  'ppl', 'nll_sum', 'bits_per_byte', 'delta_ppl_pct', 'mean', 'median', 'p99', 'max', 'top1_agreement', 'acc', 'macro_f1', 'acc_norm',
  'delta_acc', 'delta_macro_f1', 'delta_acc_norm', 'low', 'high', 'mcnemar_p', 'value',
]);

function reviveNumbers<T>(value: T): T {
  return JSON.parse(JSON.stringify(value), (key, item: unknown) => (item === null && NUMBER_FIELDS.has(key) ? Number.NaN : item)) as T;
}

function sameThresholds(a: Thresholds, b: Thresholds): boolean {
  const keys = ['maxPplIncreasePct', 'maxKld', 'minTop1', 'maxAccDrop', 'maxF1Drop'] as const;
  return keys.every((key) => (a[key] ?? null) === (b[key] ?? null));
}

/**
 * The record gated under `thresholds`: the same record when they are the ones it was gated under, else
 * its checks, verdict and failures computed again from its stored numbers (nothing is scored).
 */
export function regate(record: SweepCellRecord, thresholds: Thresholds): SweepCellRecord {
  if (record.status !== 'done' || record.report === null || sameThresholds(record.thresholds, thresholds)) return record;
  const report = reviveNumbers(record.report);
  const { checks, verdict } = gateSections(report.perplexity, report.kobest, thresholds);
  return { ...record, thresholds, checks, verdict, failed: describeFailures(checks), report: { ...record.report, thresholds, checks, verdict } };
}

export function cellFile(dir: string, id: string): string {
  return join(dir, CELLS_FOLDER, `${id}.json`);
}

export async function writeCellRecord(dir: string, record: SweepCellRecord): Promise<void> {
  await writeAtomically(cellFile(dir, record.id), (file) => file.write(new TextEncoder().encode(`${JSON.stringify(record, null, 2)}\n`)));
}

/** Reads one cell file; MALFORMED (exit 2) when it is not one. */
export async function readCellRecord(file: string): Promise<SweepCellRecord> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw ioError(file, 'read the cell file', error);
  }
  let parsed: Partial<SweepCellRecord>;
  try {
    parsed = JSON.parse(text) as Partial<SweepCellRecord>;
  } catch (error) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, 'the cell file is not JSON', { file, cause: error });
  }
  if (parsed.schema !== SWEEP_CELL_SCHEMA || typeof parsed.id !== 'string' || typeof parsed.key !== 'string' || typeof parsed.settingsKey !== 'string' || typeof parsed.model?.sha256 !== 'string') {
    throw new PolyquantError(ERROR_CODES.MALFORMED, `not a sweep cell file (schema ${SWEEP_CELL_SCHEMA} with id, key, settingsKey and model)`, { file });
  }
  if (`${parsed.id}.json` !== file.split(/[\\/]/).pop()) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, `the cell file holds cell ${JSON.stringify(parsed.id)}, not the one its name says`, { file });
  }
  return parsed as SweepCellRecord;
}

/**
 * Every cell file of a sweep folder (none when it has no cells/ folder), with its path. `lenient` skips a
 * file that is not a cell record (a sweep about to redo that cell overwrites it) instead of failing.
 */
export async function readCellRecords(dir: string, options: { readonly lenient?: boolean } = {}): Promise<{ file: string; record: SweepCellRecord }[]> {
  const folder = join(dir, CELLS_FOLDER);
  let names: string[];
  try {
    names = await readdir(folder);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw ioError(folder, 'list the cell files', error);
  }
  const records: { file: string; record: SweepCellRecord }[] = [];
  for (const name of names.sort()) {
    // Temps of writers in flight or killed (.NAME.<pid>.<hex>.tmp) are not cells.
    if (!name.endsWith('.json') || name.startsWith('.')) continue;
    const file = join(folder, name);
    try {
      records.push({ file, record: await readCellRecord(file) });
    } catch (error) {
      if (!(options.lenient === true && error instanceof PolyquantError && error.code === ERROR_CODES.MALFORMED)) throw error;
    }
  }
  return records;
}

/** The evaluation settings that differ between two sweeps, in words (for refusals). */
export function describeSettingsDifference(a: { settings: SweepEvaluation; polyquant: string; model: { sha256: string } }, b: typeof a): string {
  const differences: string[] = [];
  if (a.model.sha256 !== b.model.sha256) differences.push(`model content ${a.model.sha256.slice(0, 12)} vs ${b.model.sha256.slice(0, 12)}`);
  if (a.polyquant !== b.polyquant) differences.push(`polyquant ${a.polyquant} vs ${b.polyquant}`);
  for (const key of new Set([...Object.keys(a.settings), ...Object.keys(b.settings ?? {})]) as Set<keyof SweepEvaluation>) {
    const left = JSON.stringify(a.settings[key]) ?? 'none';
    const right = JSON.stringify(b.settings?.[key]) ?? 'none';
    if (left !== right) differences.push(`${key} ${left} vs ${right}`);
  }
  return differences.length > 0 ? differences.join('; ') : 'the settings keys differ';
}
