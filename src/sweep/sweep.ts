/**
 * `polyquant sweep`: convert a model over a grid of formats and types, verify every cell against the
 * baseline on the same tokens and documents, and recommend the smallest cell that passes every threshold.
 *
 * - Cells (grid.ts) run one after another; each is recorded in `DIR/cells/<id>.json` the moment it is done
 *   (records.ts), so a killed sweep loses at most the cell in flight, and a rerun of the same command
 *   skips every cell whose file carries the same key (`force` redoes them).
 * - The baseline is scored once per process, before the first cell, into a BaselineSession kept under
 *   `DIR/baseline/` (verify/baseline-session.ts); every cell's verify replays it. A resumed sweep replays
 *   it from disk too.
 * - `shard: I/N` (0 ≤ I < N) runs cell k of the grid when k mod N = I; `mergeSweeps` gathers shard folders.
 * - The report (report.ts) is written to `DIR/sweep.json` with the Pareto plot (`DIR/pareto.svg`,
 *   `DIR/pareto.png`) after every run, merge or `sweep report`.
 *
 * The library never exits; the CLI maps the report's verdict to the exit code.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, rmdir } from 'node:fs/promises';
import { basename, join, relative, resolve } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { ioError, writeAtomically } from '../io/file.js';
import { checkOutputFolder } from '../io/output.js';
import { removeStaleTemps } from '../io/temp.js';
import { parameterCount, readCheckpoint } from '../readers/checkpoint.js';
import { type BaselineGgufType, defaultCacheDir, modelContentHash } from '../verify/baseline-cache.js';
import { BaselineSession, type BaselineSessionStats, DEFAULT_MAX_ROW_BYTES } from '../verify/baseline-session.js';
import { KOBEST_TASK_NAMES, type KobestInputs, type KobestSplit, type KobestTaskName } from '../verify/kobest/index.js';
import type { PerplexityProtocol } from '../verify/perplexity.js';
import { checkVerifySettings } from '../verify/settings.js';
import type { Thresholds } from '../verify/thresholds.js';
import { DEFAULT_CTX, DEVICE_NAMES, type DeviceName, scoreBaseline, type VerifyOptions, type VerifyProgress } from '../verify/verify.js';
import { type CellStep, runCell, SCRATCH_FOLDER, SCRATCH_PATTERN } from './cell.js';
import { SweepCalibration } from './calibration.js';
import { parseShard, planGrid, type Shard, shardCells, shardLabel, splitCellType } from './grid.js';
import {
  cellFile,
  cellKey,
  describeSettingsDifference,
  type HashedFile,
  POLYQUANT_VERSION,
  readCellRecords,
  regate,
  type SweepCellRecord,
  type SweepEvaluation,
  type SweepModel,
  settingsKey,
  writeCellRecord,
} from './records.js';
import { buildSweepReport, paretoPoints, plotTitle, renderSweepMarkdown, type SweepReport } from './report.js';
import { jsonReportText } from '../io/json-shape.js';
import { machineProvenance } from '../verify/provenance.js';

export const SWEEP_JSON = 'sweep.json';
export const PARETO_SVG = 'pareto.svg';
export const PARETO_PNG = 'pareto.png';
export const BASELINE_FOLDER = 'baseline';

export interface SweepOptions {
  /** The HF model folder: converted for every cell, and the baseline of every comparison. */
  readonly model: string;
  /** The sweep folder (created). */
  readonly out: string;
  readonly formats?: readonly string[] | undefined;
  readonly types?: readonly string[] | undefined;
  readonly preset?: string | undefined;
  readonly simulate?: boolean | undefined;
  /**
   * Calibration text for calibrated cells (`q4_k_m+imatrix`, `q4_k_m+gptq`, `q4+gptq`, …; grid.ts): with it a
   * preset grid gets every calibrated variant of its types; without it calibrated types are refused. Its
   * content and `calibrateChunks` enter the sweep's settings key.
   */
  readonly calibrate?: readonly string[] | undefined;
  /** At most this many calibration chunks of 512 tokens (default all). */
  readonly calibrateChunks?: number | undefined;
  // verify's evaluation options, passed to every cell.
  readonly pplFiles?: readonly string[] | undefined;
  readonly ctx?: number | undefined;
  readonly protocol?: PerplexityProtocol | undefined;
  readonly stride?: number | undefined;
  readonly maxWindows?: number | undefined;
  readonly kld?: boolean | undefined;
  readonly kobestDir?: string | undefined;
  readonly tasks?: readonly KobestTaskName[] | undefined;
  readonly shots?: readonly number[] | undefined;
  readonly split?: KobestSplit | undefined;
  readonly limit?: number | undefined;
  readonly thresholds?: Thresholds | undefined;
  readonly device?: DeviceName | undefined;
  /** Engine threads and converter workers. */
  readonly threads?: number | undefined;
  /** verify's --cache-dir (large baselines' GGUF) and where the model's file hashes are remembered. */
  readonly cacheDir?: string | undefined;
  readonly baselineType?: BaselineGgufType | undefined;
  /** `I/N` (0 ≤ I < N), or undefined for the whole grid. */
  readonly shard?: string | Shard | undefined;
  /** Redo every cell of this run, and drop cell files of other settings from the folder. */
  readonly force?: boolean | undefined;
  /** Keep the converted files under DIR/artifacts (default: each is deleted after its verify). */
  readonly keepArtifacts?: boolean | undefined;
  /** Score the baseline once and replay it (default true); false scores it in every cell's verify. */
  readonly baselineCache?: boolean | undefined;
  /** Bound on the baseline's full rows kept on disk (default 2 GiB). */
  readonly baselineCacheBytes?: number | undefined;
  /** Extra copies of the report: JSON (schema polyquant.sweep/1) and Markdown. */
  readonly json?: string | undefined;
  readonly markdown?: string | undefined;
  readonly onProgress?: ((event: SweepProgress) => void) | undefined;
}

export type SweepProgress =
  | { readonly stage: 'hash'; readonly done: number; readonly total: number }
  | { readonly stage: 'baseline'; readonly event: VerifyProgress }
  | { readonly stage: 'baseline-done'; readonly seconds: number }
  | {
      readonly stage: 'cell';
      /** 1-based position among this run's cells, and their count. */
      readonly index: number;
      readonly total: number;
      readonly cell: string;
      /** skip: already done; regate: already done, gated again under new thresholds; start; done; error. */
      readonly event: 'skip' | 'regate' | 'start' | 'done' | 'error';
      readonly seconds?: number;
      readonly verdict?: string;
      readonly message?: string;
    }
  | { readonly stage: 'step'; readonly index: number; readonly total: number; readonly cell: string; readonly step: CellStep };

export interface SweepRun {
  readonly dir: string;
  readonly report: SweepReport;
  readonly shard: string | null;
  /** This run's cells, by what happened to them. */
  readonly computed: readonly string[];
  readonly skipped: readonly string[];
  readonly regated: readonly string[];
  readonly errors: readonly string[];
  /** Seconds spent scoring (or loading) the baseline before the first cell; null without the cache or when nothing ran. */
  readonly baselineSeconds: number | null;
  /** The calibration shared by this run's calibrated cells: its seconds and chunks; null when none ran. */
  readonly calibration: { readonly seconds: number; readonly chunks: number; readonly chunkSize: number } | null;
  readonly baselineStats: BaselineSessionStats | null;
  readonly seconds: number;
}

const hashBytes = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

async function hashFile(path: string, name: string): Promise<HashedFile> {
  try {
    return { name, sha256: hashBytes(await readFile(path)) };
  } catch (error) {
    throw ioError(path, 'read (to key the sweep)', error);
  }
}

/** The evaluation settings that change numbers, normalised (defaults filled in, files by content). */
async function describeEvaluation(options: SweepOptions, kobest: KobestInputs | undefined): Promise<SweepEvaluation> {
  const ppl: HashedFile[] = [];
  for (const file of options.pplFiles ?? []) ppl.push(await hashFile(resolve(file), basename(file)));
  let kobestSettings: SweepEvaluation['kobest'] = null;
  if (options.kobestDir !== undefined && kobest !== undefined) {
    const root = resolve(options.kobestDir);
    const files: HashedFile[] = [];
    for (const { evaluated, train } of kobest.values()) {
      for (const split of [evaluated, train]) if (split !== undefined) files.push(await hashFile(split.file, relative(root, split.file)));
    }
    kobestSettings = {
      files,
      tasks: [...(options.tasks ?? KOBEST_TASK_NAMES)],
      shots: [...(options.shots ?? [0])],
      split: options.split ?? 'test',
      limit: options.limit ?? null,
    };
  }
  const calibrate = options.calibrate ?? [];
  const calibration: SweepEvaluation['calibration'] =
    calibrate.length === 0
      ? undefined
      : { texts: await Promise.all(calibrate.map((file) => hashFile(resolve(file), basename(file)))), chunks: options.calibrateChunks ?? null };
  return {
    ...(calibration !== undefined && { calibration }),
    ppl,
    ctx: options.ctx ?? DEFAULT_CTX,
    protocol: options.protocol ?? 'windows',
    stride: options.stride ?? null,
    maxWindows: options.maxWindows ?? null,
    kld: options.kld ?? true,
    kobest: kobestSettings,
    device: options.device ?? 'auto',
    baselineType: options.baselineType ?? 'f16',
  };
}

/** verify's options for every cell of the sweep. */
function verifyOptions(options: SweepOptions): Omit<VerifyOptions, 'candidate' | 'baseline' | 'baselineSession' | 'onProgress'> {
  return {
    pplFiles: options.pplFiles ?? [],
    ...(options.ctx !== undefined && { ctx: options.ctx }),
    ...(options.protocol !== undefined && { protocol: options.protocol }),
    ...(options.stride !== undefined && { stride: options.stride }),
    ...(options.maxWindows !== undefined && { maxWindows: options.maxWindows }),
    kld: options.kld ?? true,
    ...(options.kobestDir !== undefined && { kobestDir: options.kobestDir }),
    ...(options.tasks !== undefined && { tasks: options.tasks }),
    ...(options.shots !== undefined && { shots: options.shots }),
    ...(options.split !== undefined && { split: options.split }),
    ...(options.limit !== undefined && { limit: options.limit }),
    ...(options.device !== undefined && { device: options.device }),
    ...(options.threads !== undefined && { threads: options.threads }),
    ...(options.cacheDir !== undefined && { cacheDir: options.cacheDir }),
    ...(options.baselineType !== undefined && { baselineType: options.baselineType }),
    thresholds: options.thresholds ?? {},
  };
}

/** Refuses (USAGE, exit 2) a folder holding another model's or other settings' cells, or removes them with `force`. */
async function checkFolderCells(dir: string, records: readonly SweepCellRecord[], current: { model: SweepModel; settings: SweepEvaluation; key: string }, force: boolean): Promise<void> {
  for (const record of records) {
    if (record.settingsKey === current.key) continue;
    if (force) {
      await rm(cellFile(dir, record.id), { force: true });
      continue;
    }
    const otherModel = record.model.sha256 !== current.model.sha256;
    throw new PolyquantError(
      ERROR_CODES.USAGE,
      otherModel
        ? `${dir} holds a sweep of another model (${record.model.path}, content ${record.model.sha256.slice(0, 12)}; this one is ${current.model.sha256.slice(0, 12)})`
        : `${dir} holds a sweep with other settings (${describeSettingsDifference(record, { settings: current.settings, polyquant: POLYQUANT_VERSION, model: current.model })})`,
      { file: cellFile(dir, record.id), hint: 'choose another --out, rerun with the same settings, or pass --force to replace its cells' },
    );
  }
}

export async function runSweep(options: SweepOptions): Promise<SweepRun> {
  const started = performance.now();
  const say = options.onProgress ?? (() => undefined);
  // Every setting and input is checked before the first conversion: a typo fails at once (exit 2).
  const calibrate = options.calibrate ?? [];
  if (options.calibrateChunks !== undefined && (!Number.isSafeInteger(options.calibrateChunks) || options.calibrateChunks < 1)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--calibrate-chunks ${options.calibrateChunks} is not a whole number ≥ 1`);
  }
  if (options.calibrateChunks !== undefined && calibrate.length === 0) throw new PolyquantError(ERROR_CODES.USAGE, '--calibrate-chunks needs --calibrate TEXT');
  const cells = planGrid({ formats: options.formats, types: options.types, preset: options.preset, simulate: options.simulate, calibrate: calibrate.length > 0 });
  const shard = typeof options.shard === 'string' ? parseShard(options.shard) : options.shard;
  if (shard !== undefined) parseShard(`${shard.index}/${shard.count}`);
  if ((options.pplFiles ?? []).length === 0 && options.kobestDir === undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'nothing to measure', { hint: 'give --ppl FILE and/or --kobest DIR' });
  }
  if (options.device !== undefined && !(DEVICE_NAMES as readonly string[]).includes(options.device)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `device ${JSON.stringify(options.device)} is not one of ${DEVICE_NAMES.join(', ')}`);
  }
  const baselineCacheBytes = options.baselineCacheBytes ?? DEFAULT_MAX_ROW_BYTES;
  if (!Number.isSafeInteger(baselineCacheBytes) || baselineCacheBytes < 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--baseline-cache-limit ${baselineCacheBytes} is not a byte count ≥ 0`);
  }
  const base = verifyOptions(options);
  const kobestInputs = await checkVerifySettings(base);
  const checkpoint = await readCheckpoint(options.model);
  const dir = await checkOutputFolder(options.out, '--out');
  if (dir === checkpoint.dir || dir.startsWith(`${checkpoint.dir}/`)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--out ${dir} is inside the model folder`, { file: dir, hint: 'give the sweep a folder of its own' });
  }
  const sha256 = await modelContentHash(checkpoint, options.cacheDir ?? defaultCacheDir(), (event) => say({ stage: 'hash', done: event.done, total: event.total }));
  const model: SweepModel = { path: checkpoint.dir, sha256, parameters: parameterCount(checkpoint) };
  const settings = await describeEvaluation(options, kobestInputs);
  const tuned = settings.calibration?.texts.find((text) => settings.ppl.some((ppl) => ppl.sha256 === text.sha256));
  if (tuned !== undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--calibrate ${tuned.name} is also a --ppl text: calibrated cells would be measured on the text they were fitted to`, {
      hint: 'calibrate on a training split and measure on held-out text',
    });
  }
  const key = settingsKey(model, settings);
  try {
    await mkdir(join(dir, 'cells'), { recursive: true });
  } catch (error) {
    throw ioError(dir, 'create the sweep folder', error);
  }
  const found = (await readCellRecords(dir, { lenient: true })).map((entry) => entry.record);
  await checkFolderCells(dir, found, { model, settings, key }, options.force === true);
  // Scratch folders of sweeps that were killed (SIGKILL) before they could clean up: ours by name, process gone.
  await removeStaleTemps(join(dir, SCRATCH_FOLDER), SCRATCH_PATTERN);

  const mine = shardCells(cells, shard);
  const previous = new Map(found.filter((record) => record.settingsKey === key).map((record) => [record.id, record]));
  const isDone = (id: string): boolean => {
    const record = previous.get(id);
    return options.force !== true && record?.status === 'done' && record.key === cellKey(key, id);
  };
  const todo = mine.filter((cell) => !isDone(cell.id));
  let session: BaselineSession | undefined;
  let baselineSeconds: number | null = null;
  if (todo.length > 0 && options.baselineCache !== false) {
    session = await BaselineSession.create({ baseline: model.path, verify: base, dir: join(dir, BASELINE_FOLDER), key, maxRowBytes: baselineCacheBytes });
  }
  let calibrationUsed: SweepCalibration | undefined;
  const computed: string[] = [];
  const skipped: string[] = [];
  const regated: string[] = [];
  const errors: string[] = [];
  const thresholds = options.thresholds ?? {};
  try {
    if (session !== undefined) {
      // The baseline's windows and KOBEST documents, scored (or found on disk) once, before any cell.
      baselineSeconds = await scoreBaseline(session, { ...base, baseline: model.path, onProgress: (event) => say({ stage: 'baseline', event }) });
      say({ stage: 'baseline-done', seconds: baselineSeconds });
    }
    const calibration =
      calibrate.length === 0
        ? undefined
        : new SweepCalibration(model.path, {
            texts: calibrate,
            chunks: options.calibrateChunks,
            threads: options.threads,
            cacheDir: options.cacheDir,
            gptq: todo.some((cell) => splitCellType(cell.type).method === 'gptq'),
          });
    calibrationUsed = calibration;
    const context = {
      calibration,
      dir,
      model,
      settings,
      settingsKey: key,
      polyquant: POLYQUANT_VERSION,
      grid: cells.map((cell) => cell.id),
      shard: shardLabel(shard),
      verify: base,
      session,
      keepArtifacts: options.keepArtifacts === true,
      workers: options.threads,
    };
    for (const [position, cell] of mine.entries()) {
      const where = { index: position + 1, total: mine.length, cell: cell.id };
      const stored = previous.get(cell.id);
      if (stored !== undefined && isDone(cell.id)) {
        const gated = regate(stored, thresholds);
        if (gated !== stored) {
          await writeCellRecord(dir, gated);
          regated.push(cell.id);
        } else skipped.push(cell.id);
        say({ stage: 'cell', ...where, event: gated !== stored ? 'regate' : 'skip', verdict: gated.verdict });
        continue;
      }
      say({ stage: 'cell', ...where, event: 'start' });
      const cellStarted = performance.now();
      const record = await runCell(cell, { ...context, onStep: (step) => say({ stage: 'step', ...where, step }) });
      await writeCellRecord(dir, record);
      const seconds = (performance.now() - cellStarted) / 1000;
      if (record.status === 'error') {
        errors.push(cell.id);
        say({ stage: 'cell', ...where, event: 'error', seconds, message: record.error?.message ?? '' });
      } else {
        computed.push(cell.id);
        say({ stage: 'cell', ...where, event: 'done', seconds, verdict: record.verdict });
      }
    }
  } finally {
    await session?.close();
    // The scratch folder is only ever a parent of cells in flight: gone when empty.
    await rmdir(join(dir, SCRATCH_FOLDER)).catch(() => undefined);
  }
  const report = await writeSweepReport(dir, { thresholds, json: options.json, markdown: options.markdown });
  return {
    dir,
    report,
    shard: shardLabel(shard),
    computed,
    skipped,
    regated,
    errors,
    baselineSeconds,
    calibration: (await calibrationUsed?.spent()) ?? null,
    baselineStats: session?.stats ?? null,
    seconds: (performance.now() - started) / 1000,
  };
}

export interface SweepReportOptions {
  /** Gate every cell under these instead of the thresholds they were run with. */
  readonly thresholds?: Thresholds | undefined;
  readonly json?: string | undefined;
  readonly markdown?: string | undefined;
  /** Draw pareto.svg / pareto.png (default true). */
  readonly plot?: boolean | undefined;
}

/**
 * Builds the report over a sweep folder's cells and writes it: DIR/sweep.json, DIR/pareto.svg,
 * DIR/pareto.png, and the optional JSON / Markdown copies. A folder whose cells come from different
 * settings is refused (USAGE).
 */
export async function writeSweepReport(dir: string, options: SweepReportOptions = {}): Promise<SweepReport> {
  const folder = resolve(dir);
  const records = (await readCellRecords(folder)).map((entry) => entry.record);
  if (records.length === 0) {
    throw new PolyquantError(ERROR_CODES.NOT_FOUND, `${folder} holds no sweep cells (cells/*.json)`, { file: folder, hint: 'run polyquant sweep MODEL --out DIR first' });
  }
  const keys = new Set(records.map((record) => record.settingsKey));
  if (keys.size > 1) {
    const [a, b] = [records[0] as SweepCellRecord, records.find((record) => record.settingsKey !== records[0]?.settingsKey) as SweepCellRecord];
    throw new PolyquantError(ERROR_CODES.USAGE, `${folder} holds cells of ${keys.size} sweeps with different settings (${a.id} and ${b.id}: ${describeSettingsDifference(a, b)})`, {
      file: folder,
      hint: 'rerun the sweep with --force to redo its cells under one setting',
    });
  }
  const plotFiles = { svg: PARETO_SVG, png: PARETO_PNG };
  let report = buildSweepReport(records, { thresholds: options.thresholds, plot: plotFiles });
  const points = paretoPoints(report);
  let plotProblem: string | undefined;
  if (options.plot === false) plotProblem = 'the plot was not asked for';
  else if (points.length === 0) plotProblem = 'no cell has a mean KL divergence to plot (run with --kld and --ppl)';
  else {
    try {
      // vega and resvg load only when a plot is drawn (they cost every other command ~0.1 s at startup).
      const { renderParetoSvg, svgToPng } = await import('./plot.js');
      const svg = await renderParetoSvg(points, { title: plotTitle(report) });
      const png = await svgToPng(svg);
      await writeText(join(folder, PARETO_SVG), svg);
      await writeAtomically(join(folder, PARETO_PNG), (file) => file.write(png));
    } catch (error) {
      if (!(error instanceof PolyquantError)) throw error;
      plotProblem = `the plot could not be drawn: ${error.message}`;
    }
  }
  if (plotProblem !== undefined) {
    report = buildSweepReport(records, { thresholds: options.thresholds, plot: null });
    if (options.plot !== false) report = { ...report, warnings: [...report.warnings, plotProblem] };
  }
  // polyquant.sweep/2: the documented snake_case shape (io/json-shape.ts, docs/schemas.md) and the machine it ran on.
  const json = jsonReportText({ ...report, provenance: machineProvenance(undefined) });
  await writeText(join(folder, SWEEP_JSON), json);
  if (options.json !== undefined) await writeText(resolve(options.json), json);
  if (options.markdown !== undefined) await writeText(resolve(options.markdown), renderSweepMarkdown(report));
  return report;
}

async function writeText(path: string, text: string): Promise<void> {
  await writeAtomically(path, (file) => file.write(new TextEncoder().encode(text)));
}

export interface MergeResult {
  readonly out: string;
  /** Cells written to the merged folder, by id, with the folder each came from. */
  readonly cells: readonly { readonly id: string; readonly from: string }[];
  /** Cells found in more than one folder (the same key: either copy is the same measurement). */
  readonly duplicates: readonly string[];
  readonly report: SweepReport;
}

/**
 * Gathers the cells of shard folders into `out` (which may be one of them). Every cell must have one
 * settings key — the same model content, evaluation and polyquant version — or the merge is refused
 * (USAGE, exit 2) before anything is written. A cell present in several folders is taken once (a
 * measured copy before an `error` one). Then the merged folder's report is written as writeSweepReport does.
 */
export async function mergeSweeps(dirs: readonly string[], out: string, options: SweepReportOptions = {}): Promise<MergeResult> {
  if (dirs.length === 0) throw new PolyquantError(ERROR_CODES.USAGE, 'sweep merge needs at least one folder');
  const target = await checkOutputFolder(out, '--out');
  const chosen = new Map<string, { record: SweepCellRecord; from: string }>();
  const duplicates = new Set<string>();
  let reference: { record: SweepCellRecord; from: string } | undefined;
  const sources = [...dirs.map((dir) => resolve(dir))];
  // Cells already in the output folder take part like any input (and must agree with them).
  if (!sources.includes(target)) sources.push(target);
  for (const dir of sources) {
    const records = await readCellRecords(dir);
    if (records.length === 0 && dir !== target) {
      throw new PolyquantError(ERROR_CODES.NOT_FOUND, `${dir} holds no sweep cells (cells/*.json)`, { file: dir, hint: 'give the --out folders of the shard runs' });
    }
    for (const { record } of records) {
      if (reference === undefined) reference = { record, from: dir };
      else if (record.settingsKey !== reference.record.settingsKey) {
        const what = record.model.sha256 !== reference.record.model.sha256 ? 'another model' : 'other settings';
        throw new PolyquantError(
          ERROR_CODES.USAGE,
          `${dir} (cell ${record.id}) holds a sweep of ${what} than ${reference.from} (cell ${reference.record.id}): ${describeSettingsDifference(record, reference.record)}`,
          { hint: 'merge only the shards of one sweep command' },
        );
      }
      const existing = chosen.get(record.id);
      if (existing === undefined) chosen.set(record.id, { record, from: dir });
      else {
        duplicates.add(record.id);
        if (existing.record.status !== 'done' && record.status === 'done') chosen.set(record.id, { record, from: dir });
      }
    }
  }
  try {
    await mkdir(join(target, 'cells'), { recursive: true });
  } catch (error) {
    throw ioError(target, 'create the merged sweep folder', error);
  }
  const merged: { id: string; from: string }[] = [];
  for (const [id, { record, from }] of chosen) {
    if (from !== target) await writeCellRecord(target, record);
    merged.push({ id, from });
  }
  const report = await writeSweepReport(target, options);
  return { out: target, cells: merged, duplicates: [...duplicates], report };
}
