/**
 * The sweep's report (schema `polyquant.sweep/1`, documented in the README): every cell of the grid with
 * its size, bits per weight, comparison numbers, times and verdict; the recommendation — the smallest cell
 * by bytes that passes every threshold, a base type's calibrated variants weighing as the base (the
 * closest to the baseline of them wins) — and whether the sweep is complete. Rendered as terminal tables
 * (one per format), Markdown for a PR comment, and the points of the Pareto plot (plot.ts).
 */
import { basename } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import type { ModelDescription } from '../verify/report.js';
import type { Thresholds } from '../verify/thresholds.js';
import { EXPORT_FORMATS, gridOrder, parseCellId, SWEEP_FORMATS, type SweepFormat, splitCellType } from './grid.js';
import type { ParetoPoint } from './plot.js';
import { POLYQUANT_VERSION, regate, type SweepCellRecord, type SweepEvaluation, type SweepKobestSummary, type SweepModel } from './records.js';

export const SWEEP_SCHEMA = 'polyquant.sweep/2';

export interface SweepReportCell {
  readonly id: string;
  readonly format: SweepFormat;
  readonly type: string;
  /** `pass` / `fail`: measured and gated; `error`: could not be measured; `missing`: in the grid, but no folder holds it. */
  readonly status: 'pass' | 'fail' | 'error' | 'missing';
  /** The cell file, relative to the sweep folder. */
  readonly file: string | null;
  readonly bytes: number | null;
  readonly bitsPerWeight: number | null;
  /** Simulate cells: the bytes are the converter's plan, no file was written. */
  readonly planned: boolean;
  readonly deltaPplPct: number | null;
  readonly kldMean: number | null;
  readonly kldP99: number | null;
  readonly top1: number | null;
  readonly kobest: readonly SweepKobestSummary[];
  readonly convertSeconds: number | null;
  readonly verifySeconds: number | null;
  readonly engine: string | null;
  readonly device: string | null;
  readonly adapter?: string;
  readonly gpu?: string;
  readonly shard: string | null;
  readonly failed: readonly string[];
  readonly error: string | null;
}

export interface SweepRecommendation {
  readonly id: string;
  readonly format: SweepFormat;
  readonly type: string;
  readonly bytes: number;
  readonly bitsPerWeight: number;
}

export interface SweepReport {
  readonly schema: typeof SWEEP_SCHEMA;
  readonly created: string;
  /** The polyquant that wrote this report (each cell names its own in its file; they share the settings key, so the same). */
  readonly polyquant: string;
  readonly model: SweepModel | null;
  readonly settingsKey: string | null;
  readonly settings: SweepEvaluation | null;
  readonly thresholds: Thresholds;
  /** How the baseline ran (from the first measured cell's verify report). */
  readonly baseline: ModelDescription | null;
  /** Every cell id of the sweep, in grid order. */
  readonly grid: readonly string[];
  readonly cells: readonly SweepReportCell[];
  readonly recommendation: SweepRecommendation | null;
  /** The smallest passing cell of each format present (id, or null). */
  readonly recommendationByFormat: Readonly<Record<string, string | null>>;
  readonly complete: boolean;
  readonly missing: readonly string[];
  readonly errors: readonly string[];
  /** `pass` when the sweep is complete and some cell passes every threshold; the exit code follows it. */
  readonly verdict: 'pass' | 'fail';
  readonly warnings: readonly string[];
  /** The plot's files, relative to the sweep folder, once written. */
  readonly plot: { readonly svg: string; readonly png: string } | null;
}

export interface BuildReportOptions {
  /** Gate every cell under these (default: the thresholds the cells were gated under). */
  readonly thresholds?: Thresholds | undefined;
  /** Cell files' paths relative to the sweep folder, by id. */
  readonly files?: ReadonlyMap<string, string>;
  readonly plot?: SweepReport['plot'];
}

function thresholdsGiven(thresholds: Thresholds): boolean {
  return Object.values(thresholds).some((value) => value !== undefined);
}

/** Builds the report over a sweep folder's cells (all of one settings key). */
export function buildSweepReport(records: readonly SweepCellRecord[], options: BuildReportOptions = {}): SweepReport {
  const keys = new Set(records.map((record) => record.settingsKey));
  if (keys.size > 1) {
    throw new PolyquantError(ERROR_CODES.USAGE, `the cells come from ${keys.size} sweeps with different settings`, { hint: 'report one sweep at a time' });
  }
  const byId = new Map(records.map((record) => [record.id, record]));
  const grid = gridOrder([...records.flatMap((record) => record.grid), ...byId.keys()]);
  const first = grid.map((id) => byId.get(id)).find((record) => record?.status === 'done') ?? records[0];
  const thresholds: Thresholds = options.thresholds ?? first?.thresholds ?? {};
  const cells: SweepReportCell[] = grid.map((id) => {
    const stored = byId.get(id);
    const parsed = parseCellId(id);
    const format = (stored?.format ?? parsed?.format ?? 'gguf') as SweepFormat;
    const type = stored?.type ?? parsed?.type ?? id;
    if (stored === undefined) {
      return {
        id, format, type, status: 'missing', file: null, bytes: null, bitsPerWeight: null, planned: false, deltaPplPct: null, kldMean: null, kldP99: null, top1: null,
        kobest: [], convertSeconds: null, verifySeconds: null, engine: null, device: null, shard: null, failed: [], error: null,
      };
    }
    const record = regate(stored, thresholds);
    return {
      id,
      format,
      type,
      status: record.status === 'error' ? 'error' : record.verdict === 'pass' ? 'pass' : 'fail',
      file: options.files?.get(id) ?? `cells/${id}.json`,
      bytes: record.bytes,
      bitsPerWeight: record.bitsPerWeight,
      planned: record.artifact?.planned ?? false,
      deltaPplPct: record.summary?.deltaPplPct ?? null,
      kldMean: record.summary?.kldMean ?? null,
      kldP99: record.summary?.kldP99 ?? null,
      top1: record.summary?.top1 ?? null,
      kobest: record.summary?.kobest ?? [],
      convertSeconds: record.convertSeconds,
      verifySeconds: record.verifySeconds,
      engine: record.engine,
      device: record.device,
      ...(record.adapter !== undefined && { adapter: record.adapter }),
      ...(record.gpu !== undefined && { gpu: record.gpu }),
      shard: record.shard,
      failed: record.failed,
      error: record.error === null ? null : record.error.message,
    };
  });
  const passing = cells.filter((cell) => cell.status === 'pass' && cell.bytes !== null);
  // Verify in the engine that will run the artifact: simulated cells are recommended only when the sweep has nothing else.
  const exported = passing.filter((cell) => EXPORT_FORMATS.includes(cell.format));
  const smallest = (list: readonly SweepReportCell[]): SweepReportCell | undefined => {
    // A calibrated cell (q4_k_m+gptq) holds the same tensors as its base type, in bytes that differ only by
    // metadata: the cells of one base type weigh as the smallest of them, and the lowest mean KLD wins.
    const groups = new Map<string, SweepReportCell[]>();
    for (const cell of list) {
      const key = `${cell.format}:${splitCellType(cell.type).base}`;
      groups.set(key, [...(groups.get(key) ?? []), cell]);
    }
    let best: { cell: SweepReportCell; bytes: number } | undefined;
    for (const group of groups.values()) {
      const bytes = Math.min(...group.map((cell) => cell.bytes as number));
      const cell = group.reduce((a, b) => (closer(b, a) ? b : a));
      if (best === undefined || bytes < best.bytes) best = { cell, bytes };
    }
    return best?.cell;
  };
  const hasExported = cells.some((cell) => EXPORT_FORMATS.includes(cell.format));
  const chosen = smallest(hasExported ? exported : passing);
  const recommendationByFormat: Record<string, string | null> = {};
  for (const format of SWEEP_FORMATS) {
    if (cells.some((cell) => cell.format === format)) recommendationByFormat[format] = smallest(passing.filter((cell) => cell.format === format))?.id ?? null;
  }
  const missing = cells.filter((cell) => cell.status === 'missing').map((cell) => cell.id);
  const errors = cells.filter((cell) => cell.status === 'error').map((cell) => cell.id);
  const warnings: string[] = [];
  if (!thresholdsGiven(thresholds)) warnings.push('no thresholds set: every measured cell passes, so the recommendation is simply the smallest cell (give --max-kld, --max-ppl-increase, --min-top1 …)');
  if (missing.length > 0) warnings.push(`${missing.length} cell(s) of the grid are in no folder: ${missing.join(', ')} (a shard that did not finish, or was not merged?)`);
  if (errors.length > 0) warnings.push(`${errors.length} cell(s) could not be measured: ${errors.join(', ')} (rerun the sweep to retry them)`);
  const complete = missing.length === 0 && errors.length === 0;
  return {
    schema: SWEEP_SCHEMA,
    created: new Date().toISOString(),
    polyquant: POLYQUANT_VERSION,
    model: first?.model ?? null,
    settingsKey: first?.settingsKey ?? null,
    settings: first?.settings ?? null,
    thresholds,
    baseline: grid.map((id) => byId.get(id)?.report?.baseline).find((baseline) => baseline !== undefined) ?? null,
    grid,
    cells,
    recommendation:
      chosen === undefined ? null : { id: chosen.id, format: chosen.format, type: chosen.type, bytes: chosen.bytes as number, bitsPerWeight: chosen.bitsPerWeight as number },
    recommendationByFormat,
    complete,
    missing,
    errors,
    verdict: complete && chosen !== undefined ? 'pass' : 'fail',
    warnings,
    plot: options.plot ?? null,
  };
}

/** The plot's points: measured cells with a mean KL divergence. */
/** Whether `a` measured closer to the baseline than `b` (mean KLD, else |ΔPPL|; a tie: the smaller file). */
function closer(a: SweepReportCell, b: SweepReportCell): boolean {
  const measure = (cell: SweepReportCell): number | null => cell.kldMean ?? (cell.deltaPplPct === null ? null : Math.abs(cell.deltaPplPct));
  const [x, y] = [measure(a), measure(b)];
  if (x !== null && y !== null && x !== y) return x < y;
  return (a.bytes as number) < (b.bytes as number);
}

export function paretoPoints(report: SweepReport): ParetoPoint[] {
  return report.cells
    .filter((cell) => (cell.status === 'pass' || cell.status === 'fail') && cell.kldMean !== null && cell.bitsPerWeight !== null)
    .map((cell) => ({
      format: cell.format,
      type: cell.type,
      bitsPerWeight: cell.bitsPerWeight as number,
      kldMean: cell.kldMean as number,
      passed: cell.status === 'pass',
      recommended: report.recommendation?.id === cell.id,
    }));
}

export function plotTitle(report: SweepReport): string {
  return `polyquant sweep: ${report.model === null ? 'model' : basename(report.model.path)} — bits per weight vs mean KLD`;
}

// ============================================================================================ rendering

function formatSize(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${Math.round(bytes)} B` : `${value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2)} ${units[unit]}`;
}

const dash = '–';
const signed = (value: number, digits: number): string => `${value > 0 ? '+' : ''}${value.toFixed(digits)}`;
const points = (value: number | null): string => (value === null ? '?' : signed(100 * value, 1));
const withCi = (value: number | null, ci: readonly [number | null, number | null]): string => `${points(value)} [${points(ci[0])}, ${points(ci[1])}]`;
const seconds = (value: number | null): string => (value === null ? dash : `${value.toFixed(1)} s`);

/** KOBEST in one cell: the section, or the one with the largest accuracy drop when there are several. */
function worstKobest(cell: SweepReportCell): SweepKobestSummary | undefined {
  return cell.kobest.reduce<SweepKobestSummary | undefined>((worst, section) => (worst === undefined || (section.deltaAcc ?? -Infinity) < (worst.deltaAcc ?? -Infinity) ? section : worst), undefined);
}

function hasKobest(report: SweepReport): boolean {
  return report.cells.some((cell) => cell.kobest.length > 0);
}

function kobestSections(report: SweepReport): number {
  return Math.max(0, ...report.cells.map((cell) => cell.kobest.length));
}

function resultCell(cell: SweepReportCell, recommended: boolean): string {
  if (cell.status === 'missing') return 'missing';
  if (cell.status === 'error') return `ERROR: ${cell.error ?? ''}`;
  const mark = recommended ? ' ★ recommended' : '';
  return cell.status === 'pass' ? `pass${mark}` : `FAIL: ${cell.failed.join('; ')}`;
}

function formatRows(report: SweepReport, format: SweepFormat): { header: string[]; rows: string[][] } {
  const kobest = hasKobest(report);
  const several = kobestSections(report) > 1;
  const header = ['type', 'size', 'bits/w', 'ΔPPL', 'mean KLD', 'p99 KLD', 'top-1'];
  if (kobest) header.push(several ? 'KOBEST worst Δacc pts (95% CI)' : 'KOBEST Δacc pts (95% CI)', 'ΔF1 pts (95% CI)');
  header.push('convert', 'verify', 'result');
  const cells = report.cells
    .filter((cell) => cell.format === format)
    // Largest first, as people read a size ladder; unmeasured cells last, in grid order.
    .sort((a, b) => (b.bytes ?? -1) - (a.bytes ?? -1));
  const rows = cells.map((cell) => {
    const row = [
      cell.type,
      cell.bytes === null ? dash : `${formatSize(cell.bytes)}${cell.planned ? ' (plan)' : ''}`,
      cell.bitsPerWeight === null ? dash : cell.bitsPerWeight.toFixed(2),
      cell.deltaPplPct === null ? dash : `${signed(cell.deltaPplPct, 3)}%`,
      cell.kldMean === null ? dash : cell.kldMean.toExponential(2),
      cell.kldP99 === null ? dash : cell.kldP99.toExponential(2),
      cell.top1 === null ? dash : `${(100 * cell.top1).toFixed(2)}%`,
    ];
    if (kobest) {
      const section = worstKobest(cell);
      row.push(
        section === undefined ? dash : `${several ? `${section.task}/${section.shots} ` : ''}${withCi(section.deltaAcc, section.deltaAccCi)}`,
        section === undefined ? dash : withCi(section.deltaF1, section.deltaF1Ci),
      );
    }
    row.push(seconds(cell.convertSeconds), seconds(cell.verifySeconds), resultCell(cell, report.recommendation?.id === cell.id));
    return row;
  });
  return { header, rows };
}

/** Every KOBEST section of every cell (when cells have more than one). */
function kobestRows(report: SweepReport): { header: string[]; rows: string[][] } {
  const header = ['cell', 'task', 'shots', 'n', 'Δacc pts (95% CI)', 'ΔF1 pts (95% CI)'];
  const rows = report.cells.flatMap((cell) =>
    cell.kobest.map((section) => [cell.id, section.task, String(section.shots), String(section.n), withCi(section.deltaAcc, section.deltaAccCi), withCi(section.deltaF1, section.deltaF1Ci)]),
  );
  return { header, rows };
}

function settingsLine(report: SweepReport): string {
  const settings = report.settings;
  if (settings === null) return 'no cells measured';
  const parts: string[] = [];
  if (settings.ppl.length > 0) {
    parts.push(`perplexity on ${settings.ppl.map((file) => file.name).join(', ')} (${settings.protocol}, ctx ${settings.ctx}${settings.maxWindows === null ? '' : `, first ${settings.maxWindows} windows`})`);
  }
  if (settings.kobest !== null) parts.push(`KOBEST ${settings.kobest.tasks.join(', ')} ${settings.kobest.split}, shots ${settings.kobest.shots.join(',')}${settings.kobest.limit === null ? '' : `, limit ${settings.kobest.limit}`}`);
  return parts.join('; ');
}

function thresholdsLine(thresholds: Thresholds): string {
  const parts: string[] = [];
  if (thresholds.maxPplIncreasePct !== undefined) parts.push(`ΔPPL ≤ ${thresholds.maxPplIncreasePct}%`);
  if (thresholds.maxKld !== undefined) parts.push(`mean KLD ≤ ${thresholds.maxKld}`);
  if (thresholds.minTop1 !== undefined) parts.push(`top-1 ≥ ${(100 * thresholds.minTop1).toFixed(2)}%`);
  if (thresholds.maxAccDrop !== undefined) parts.push(`KOBEST acc drop ≤ ${(100 * thresholds.maxAccDrop).toFixed(1)} pts`);
  if (thresholds.maxF1Drop !== undefined) parts.push(`macro-F1 drop ≤ ${(100 * thresholds.maxF1Drop).toFixed(1)} pts`);
  return parts.length > 0 ? parts.join(', ') : 'none';
}

const FORMAT_TITLES: Record<SweepFormat, string> = { gguf: 'GGUF (llama.cpp)', onnx: 'ONNX (onnxruntime)', webgpu: 'WebGPU (MLC tensor cache)', simulate: 'simulated (reference engine, no file)' };

function recommendationLine(report: SweepReport): string {
  const chosen = report.recommendation;
  if (chosen === null) return 'recommendation: none — no cell passes every threshold';
  return `recommendation: ${chosen.format} ${chosen.type} (${formatSize(chosen.bytes)}, ${chosen.bitsPerWeight.toFixed(2)} bits/weight) — the smallest cell that passes every threshold`;
}

function baselineLine(report: SweepReport): string {
  const baseline = report.baseline;
  if (baseline === null) return '';
  const artifact = baseline.artifact === undefined ? '' : ` on its ${baseline.artifact.type} GGUF`;
  return `baseline: ${baseline.path} (${baseline.engine}${artifact}, ${baseline.device})`;
}

export function renderSweepText(report: SweepReport, table: (header: readonly string[], rows: readonly (readonly string[])[]) => string): string {
  const lines = [
    `model: ${report.model?.path ?? '?'}${report.model === null ? '' : ` (${report.model.parameters.toLocaleString('en-US')} parameters, sha256 ${report.model.sha256.slice(0, 12)})`}`,
    baselineLine(report),
    `evaluation: ${settingsLine(report)}`,
    `thresholds: ${thresholdsLine(report.thresholds)}`,
  ].filter((line) => line !== '');
  for (const format of SWEEP_FORMATS) {
    if (!report.cells.some((cell) => cell.format === format)) continue;
    const { header, rows } = formatRows(report, format);
    lines.push('', FORMAT_TITLES[format], table(header, rows));
  }
  if (kobestSections(report) > 1) {
    const { header, rows } = kobestRows(report);
    lines.push('', 'KOBEST', table(header, rows));
  }
  lines.push('');
  for (const warning of report.warnings) lines.push(`warning: ${warning}`);
  lines.push(recommendationLine(report));
  if (report.plot !== null) lines.push(`plot: ${report.plot.svg}, ${report.plot.png}`);
  lines.push(`verdict: ${report.verdict}${report.complete ? '' : ' (the sweep is incomplete)'}`);
  return lines.join('\n');
}

export function renderSweepMarkdown(report: SweepReport): string {
  const md = (header: readonly string[], body: readonly (readonly string[])[]): string =>
    [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...body.map((row) => `| ${row.map((cell) => cell.replace(/\|/g, '\\|')).join(' | ')} |`)].join('\n');
  const chosen = report.recommendation;
  const parts = [
    `## polyquant sweep: ${report.verdict === 'pass' ? 'PASS' : 'FAIL'}${chosen === null ? '' : ` — ship ${chosen.format} ${chosen.type}`}`,
    '',
    `- model: \`${report.model?.path ?? '?'}\`${report.model === null ? '' : ` (${report.model.parameters.toLocaleString('en-US')} parameters)`}`,
  ];
  const baseline = baselineLine(report);
  if (baseline !== '') parts.push(`- ${baseline}`);
  parts.push(`- evaluation: ${settingsLine(report)}`, `- thresholds: ${thresholdsLine(report.thresholds)}`, `- ${recommendationLine(report)}`);
  for (const warning of report.warnings) parts.push(`- warning: ${warning}`);
  for (const format of SWEEP_FORMATS) {
    if (!report.cells.some((cell) => cell.format === format)) continue;
    const { header, rows } = formatRows(report, format);
    parts.push('', `### ${FORMAT_TITLES[format]}`, '', md(header, rows));
  }
  if (kobestSections(report) > 1) {
    const { header, rows } = kobestRows(report);
    parts.push('', '### KOBEST', '', md(header, rows));
  }
  if (report.plot !== null) parts.push('', `Pareto plot (bits per weight vs mean KLD): \`${report.plot.png}\` in the sweep folder.`);
  return `${parts.join('\n')}\n`;
}
