/**
 * One cell of a sweep: convert the model to the cell's format and type (each cell alone, so its convert
 * time is its own and a kill loses only it), verify the artifact in the engine that runs it against the
 * baseline on the sweep's tokens and documents, and return the record. A `simulate` cell writes nothing:
 * its size is the converter's plan (a dry run), its candidate the reference engine on quantize →
 * dequantized weights. Artifacts go to a scratch folder under the sweep folder and are deleted after the
 * verify, or to DIR/artifacts with `keepArtifacts`.
 */
import { mkdir, rm, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { convertToGguf } from '../converters/gguf/convert.js';
import { convertToOnnx } from '../converters/onnx/convert.js';
import { convertToWebGpu } from '../converters/webgpu/convert.js';
import { isPolyquantError } from '../errors.js';
import { ioError } from '../io/file.js';
import { trackTemp } from '../io/temp.js';
import { isGgufFileType } from '../quant/policy.js';
import type { BaselineSession } from '../verify/baseline-session.js';
import type { ModelDescription, VerifyReport } from '../verify/report.js';
import { type VerifyOptions, type VerifyProgress, verify } from '../verify/verify.js';
import type { SweepCalibration, SweepCalibrationResult } from './calibration.js';
import { type SweepCell, splitCellType } from './grid.js';
import { type SweepCellRecord, cellKey, describeFailures, SWEEP_CELL_SCHEMA, type SweepEvaluation, type SweepModel, summarise } from './records.js';

export const ARTIFACTS_FOLDER = 'artifacts';
export const SCRATCH_FOLDER = 'scratch';
/** Scratch folders are `<pid>-<cell id>`: the pid tells a killed sweep's leftovers (io/temp.ts removeStaleTemps). */
export const SCRATCH_PATTERN = /^(\d+)-[a-z0-9_+-]+$/;

export type CellStep =
  | { readonly step: 'calibrate'; readonly done: number; readonly total: number }
  | { readonly step: 'convert'; readonly done: number; readonly total: number }
  | { readonly step: 'verify'; readonly event: VerifyProgress };

export interface CellContext {
  /** The sweep folder, absolute. */
  readonly dir: string;
  readonly model: SweepModel;
  readonly settings: SweepEvaluation;
  readonly settingsKey: string;
  readonly polyquant: string;
  readonly grid: readonly string[];
  readonly shard: string | null;
  /** verify's options for every cell (texts, windows, KOBEST, thresholds, device, threads …), without candidate. */
  readonly verify: Omit<VerifyOptions, 'candidate' | 'baseline' | 'baselineSession' | 'onProgress'>;
  readonly session: BaselineSession | undefined;
  readonly keepArtifacts: boolean;
  /** Quantizer threads for the converters (default: every core). */
  readonly workers: number | undefined;
  /** The calibration calibrated cells (`+imatrix`, `+gptq`) take; undefined without --calibrate. */
  readonly calibration?: SweepCalibration | undefined;
  readonly onStep?: (step: CellStep) => void;
}

/** A path under `parent` as `prefix/relative`, so a report does not name a scratch folder that is gone. */
function relativePath(path: string, parent: string, prefix: string): string {
  const rel = relative(parent, path);
  return rel === '' || rel.startsWith('..') ? path : join(prefix, rel).split(sep).join('/');
}

function relativeReport(report: VerifyReport, parent: string, prefix: string): VerifyReport {
  const candidate: ModelDescription = { ...report.candidate, path: relativePath(report.candidate.path, parent, prefix) };
  return { ...report, candidate };
}

interface Converted {
  /** What verify takes as the candidate. */
  readonly candidate: string;
  readonly bytes: number;
  readonly name: string;
  readonly planned: boolean;
}

async function convertCell(cell: SweepCell, model: string, folder: string, context: CellContext, calibrated: SweepCalibrationResult | undefined): Promise<Converted> {
  const workers = context.workers === undefined ? {} : { workers: context.workers };
  const onProgress = (done: number, total: number): void => context.onStep?.({ step: 'convert', done, total });
  const { base: type, method } = splitCellType(cell.type);
  // The file is named after the base type and method alike: `gguf-q4_k_m+gptq.gguf`.
  const gptq = method === 'gptq' && calibrated?.hessians !== undefined ? { hessians: calibrated.hessians, gptq: { provenance: calibrated.provenance } } : {};
  switch (cell.format) {
    case 'gguf': {
      const out = join(folder, `${cell.id}.gguf`);
      // +imatrix: `convert --calibrate`; +gptq: `convert --calibrate --optimize` (the same importance matrix, GPTQ on top).
      const imatrix = calibrated === undefined ? {} : { imatrix: calibrated.imatrix, imatrixProvenance: calibrated.imatrixProvenance };
      const hessians = method === 'gptq' && calibrated?.hessians !== undefined ? { hessians: calibrated.hessians } : {};
      await convertToGguf(model, { type, out, onProgress, ...workers, ...imatrix, ...hessians });
      return { candidate: out, bytes: (await stat(out)).size, name: `${cell.id}.gguf`, planned: false };
    }
    case 'onnx': {
      const out = join(folder, cell.id);
      const plan = await convertToOnnx(model, { types: [type], out, force: true, onProgress, ...workers, ...gptq });
      const planned = plan.models[0];
      if (planned === undefined) throw new Error('the ONNX converter planned no model');
      const bytes = planned.dataFiles.reduce((sum, data) => sum + data.bytes, 0) + (await stat(join(out, planned.file))).size;
      return { candidate: out, bytes, name: cell.id, planned: false };
    }
    case 'webgpu': {
      const out = join(folder, cell.id);
      const plan = await convertToWebGpu(model, { types: [type], out, force: true, onProgress, ...workers, ...gptq });
      const planned = plan.models[0];
      if (planned === undefined) throw new Error('the WebGPU converter planned no model');
      return { candidate: out, bytes: planned.diskBytes, name: cell.id, planned: false };
    }
    case 'simulate': {
      // Nothing is written: the size is what the converter would write (headers and tokenizer files read only).
      if (isGgufFileType(type)) {
        const plan = await convertToGguf(model, { type, dryRun: true });
        return { candidate: model, bytes: plan.fileBytes, name: `${cell.id} (planned ${type}.gguf)`, planned: true };
      }
      const plan = await convertToWebGpu(model, { types: [type], dryRun: true });
      return { candidate: model, bytes: plan.models[0]?.diskBytes ?? 0, name: `${cell.id} (planned ${type} WebGPU folder)`, planned: true };
    }
  }
}

/**
 * The calibration a calibrated cell needs (undefined for the others), computed by the first cell that
 * asks: a sweep planned without --calibrate cannot hold calibrated cells (grid.ts refuses them).
 */
async function cellCalibration(cell: SweepCell, context: CellContext): Promise<SweepCalibrationResult | undefined> {
  const { method } = splitCellType(cell.type);
  if (method === undefined) return undefined;
  if (context.calibration === undefined) throw new Error(`${cell.id} is a calibrated cell, but the sweep has no calibration`);
  return context.calibration.get(method, (done, total) => context.onStep?.({ step: 'calibrate', done, total }));
}

/**
 * Converts and verifies one cell. Bad input met on the way (a PolyquantError: a type this model cannot
 * take, an engine or device this machine lacks) becomes an `error` record, so one cell cannot stop the
 * rest of the grid; anything else is a bug and is thrown.
 */
export async function runCell(cell: SweepCell, context: CellContext): Promise<SweepCellRecord> {
  const { dir, model } = context;
  const base = {
    schema: SWEEP_CELL_SCHEMA,
    id: cell.id,
    format: cell.format,
    type: cell.type,
    key: cellKey(context.settingsKey, cell.id),
    settingsKey: context.settingsKey,
    model,
    settings: context.settings,
    polyquant: context.polyquant,
    grid: context.grid,
    shard: context.shard,
  } as const;
  const kept = context.keepArtifacts && cell.format !== 'simulate';
  const folder = kept ? join(dir, ARTIFACTS_FOLDER) : join(dir, SCRATCH_FOLDER, `${process.pid}-${cell.id}`);
  const untrack = kept ? () => undefined : trackTemp(folder);
  let convertSeconds: number | null = null;
  let verifySeconds: number | null = null;
  try {
    try {
      await mkdir(folder, { recursive: true });
    } catch (error) {
      throw ioError(folder, 'create the cell folder', error);
    }
    // The shared calibration before the clock: it is the sweep's, not this cell's (SweepRun.calibrationSeconds).
    const calibrated = await cellCalibration(cell, context);
    let started = performance.now();
    const converted = await convertCell(cell, model.path, folder, context, calibrated);
    convertSeconds = (performance.now() - started) / 1000;
    started = performance.now();
    const report = await verify({
      ...context.verify,
      candidate: converted.candidate,
      baseline: model.path,
      engine: 'auto',
      ...(cell.format === 'onnx' && { onnxType: splitCellType(cell.type).base as NonNullable<VerifyOptions['onnxType']> }),
      ...(cell.format === 'simulate' && { simulate: cell.type }),
      ...(context.session !== undefined && { baselineSession: context.session }),
      onProgress: (event) => context.onStep?.({ step: 'verify', event }),
    });
    verifySeconds = (performance.now() - started) / 1000;
    const stored = relativeReport(report, folder, kept ? ARTIFACTS_FOLDER : '.');
    return {
      ...base,
      status: 'done',
      error: null,
      artifact: { name: kept ? `${ARTIFACTS_FOLDER}/${converted.name}` : converted.name, kept, planned: converted.planned },
      bytes: converted.bytes,
      bitsPerWeight: (converted.bytes * 8) / model.parameters,
      convertSeconds,
      verifySeconds,
      engine: report.candidate.engine,
      device: report.candidate.device,
      ...(report.candidate.gpu !== undefined && { gpu: report.candidate.gpu }),
      ...(report.candidate.adapter !== undefined && { adapter: report.candidate.adapter }),
      summary: summarise(report),
      thresholds: report.thresholds,
      checks: report.checks,
      verdict: report.verdict,
      failed: describeFailures(report.checks),
      report: stored,
      created: new Date().toISOString(),
    };
  } catch (error) {
    if (!isPolyquantError(error)) throw error;
    return {
      ...base,
      status: 'error',
      error: { code: error.code, message: error.message },
      artifact: null,
      bytes: null,
      bitsPerWeight: null,
      convertSeconds,
      verifySeconds,
      engine: null,
      device: null,
      summary: null,
      thresholds: context.verify.thresholds ?? {},
      checks: [],
      verdict: 'error',
      failed: [],
      report: null,
      created: new Date().toISOString(),
    };
  } finally {
    if (!kept) {
      await rm(folder, { recursive: true, force: true });
      untrack();
    }
  }
}
