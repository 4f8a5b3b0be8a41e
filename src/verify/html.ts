/**
 * `verify --html FILE`: the verification report as one self-contained page (plot/page.ts) for a release
 * reviewer: the verdict, the models, the summary tables (perplexity ±, KL divergence, top-1, KOBEST with
 * intervals, the checks), and charts drawn by the shared Vega layer (plot/vega.ts):
 *
 * - per text, each window's mean NLL for baseline and candidate, and the candidate − baseline difference
 *   (the two lines overlap for a good quantization; the difference is what moved);
 * - the KL-divergence distribution over positions as quantiles (llama-perplexity's percentiles, log scale,
 *   the mean as a dashed line), one series per text;
 * - KOBEST accuracy and macro-F1 per task × shots for both models with 95 % intervals, and the paired
 *   differences with their bootstrap intervals.
 *
 * The page reads the report's JSON names (snake_case, schema polyquant.verify/1) through the structural
 * types below, in which everything a report may lack is optional: a report without KOBEST, without KL
 * divergence (`--no-kld`), from before the percentiles were added, or read back from JSON (where NaN is
 * null) still renders, each missing part replaced by a note saying what is not there.
 */
import type { Spec } from 'vega';
import { chartFigure, type Cell, escapeHtml, htmlPage, htmlTable, note } from '../plot/page.js';
import { AXIS_TEXT_STYLE, decadeTicks, FONT_FAMILIES, GRID_COLOR, LEGEND_TEXT_STYLE, renderVegaSvg, RULE_COLOR, SERIES_PALETTE, TITLE_STYLE } from '../plot/vega.js';
import { NO_CHANGE_NOTE } from './compare-kobest.js';
import type { EngineVersions } from './provenance.js';
import { significant as significantDigits } from './stats.js';
import { type Check, describeCheckLimit, describeCheckValue } from './thresholds.js';

/** A number as a report holds it: JSON writes NaN and ±Infinity as null. */
type Num = number | null | undefined;

export interface VerifyPageModel {
  readonly path: string;
  readonly engine: string;
  readonly device: string;
  readonly threads?: number | null;
  readonly gpu?: string;
  readonly adapter?: string;
  readonly simulate?: string;
  readonly artifact?: { readonly file: string; readonly type: string; readonly cached: boolean };
}

export interface VerifyPagePerplexityNumbers {
  readonly ppl: Num;
  readonly ppl_stderr?: Num;
  readonly scored_tokens?: Num;
  readonly bits_per_byte?: Num;
  readonly window_nll?: readonly Num[];
  readonly non_finite_positions?: Num;
}

export interface VerifyPageKld {
  readonly mean: Num;
  readonly mean_stderr?: Num;
  readonly median?: Num;
  readonly p99?: Num;
  readonly max?: Num;
  readonly percentiles?: { readonly [name: string]: Num };
}

export interface VerifyPagePerplexitySection {
  readonly file: string;
  readonly protocol: string;
  readonly ctx: number;
  readonly tokens?: Num;
  readonly baseline: VerifyPagePerplexityNumbers;
  readonly candidate: VerifyPagePerplexityNumbers;
  readonly comparison: {
    readonly delta_ppl_pct: Num;
    readonly delta_ppl_pct_stderr?: Num;
    readonly kld: VerifyPageKld | null;
    /** p_candidate − p_baseline of the next token, as a fraction; null without target log-probabilities. */
    readonly delta_p?: { readonly mean: Num; readonly mean_stderr?: Num; readonly rms: Num; readonly rms_stderr?: Num } | null;
    readonly top1_agreement: Num;
    readonly positions?: Num;
    /** llama-perplexity's "Same top p": a fraction, or `{ value, stderr }`. */
    readonly same_top_p?: Num | { readonly value: Num; readonly stderr?: Num };
  };
}

export interface VerifyPageInterval {
  readonly low: Num;
  readonly high: Num;
}

export interface VerifyPageKobestNumbers {
  readonly n: number;
  readonly acc: Num;
  readonly acc_stderr?: Num;
  readonly macro_f1: Num;
  readonly macro_f1_ci?: VerifyPageInterval;
}

export interface VerifyPageKobestSection {
  readonly task: string;
  readonly shots: number;
  readonly split: string;
  readonly baseline: VerifyPageKobestNumbers;
  readonly candidate: VerifyPageKobestNumbers;
  readonly comparison: {
    readonly delta_acc: Num;
    readonly delta_acc_ci: VerifyPageInterval;
    readonly delta_macro_f1: Num;
    readonly delta_macro_f1_ci: VerifyPageInterval;
    readonly flips: number;
    readonly lost: number;
    readonly gained: number;
    readonly mcnemar_p: Num;
    readonly ci_note?: string | null;
  };
}

/** The run's provenance block (provenance.ts Provenance), as far as the page shows it. */
export interface VerifyPageProvenance {
  readonly polyquant?: string;
  readonly node?: string;
  readonly platform?: string;
  readonly cpu?: string | null;
  readonly cpus?: number;
  readonly command_line?: readonly string[] | null;
  readonly started_at?: string;
  readonly duration_s?: Num;
  readonly engines?: EngineVersions;
}

/** What the page reads of a VerifyReport (report.ts); a VerifyReport, in memory or parsed from JSON, is one. */
export interface VerifyPageReport {
  readonly schema?: string;
  readonly created?: string;
  readonly candidate: VerifyPageModel;
  readonly baseline: VerifyPageModel;
  readonly perplexity: readonly VerifyPagePerplexitySection[];
  readonly kobest: readonly VerifyPageKobestSection[];
  readonly checks: readonly Check[];
  /** Whether any threshold was checked (verify/2); without it, whether there are checks. */
  readonly gated?: boolean;
  readonly verdict: 'pass' | 'fail';
  readonly provenance?: VerifyPageProvenance;
}

/** Per-window points drawn per text; a longer text's windows are averaged in runs of consecutive windows. */
export const MAX_WINDOW_POINTS = 2000;

/** The KL-divergence quantiles drawn, low to high (llama-perplexity's percentiles and the maximum). */
const KLD_QUANTILES = [
  { key: 'p1', label: '1%' },
  { key: 'p5', label: '5%' },
  { key: 'p10', label: '10%' },
  { key: 'p50', label: 'median' },
  { key: 'p90', label: '90%' },
  { key: 'p95', label: '95%' },
  { key: 'p99', label: '99%' },
  { key: 'p99_9', label: '99.9%' },
  { key: 'max', label: 'max' },
] as const;

/** Lowest KLD drawn on the log axis; a quantile below it (0 for a lossless candidate) sits on a "0" line. */
const KLD_DISPLAY_MIN = 1e-10;

/** z of a two-sided 95 % normal interval: the whiskers on each model's accuracy are acc ± 1.96 · acc_stderr. */
const Z95 = 1.959963984540054;

const BASELINE_STYLE = SERIES_PALETTE[0];
const CANDIDATE_STYLE = SERIES_PALETTE[1];
/** Worse / better differences in the per-window chart. */
const WORSE_COLOR = '#e45756';
const BETTER_COLOR = '#54a24b';

const CHART_WIDTH = 940;

/** Renders the whole page. Deterministic: the same report gives the same bytes. */
export async function renderVerifyHtml(report: VerifyPageReport): Promise<string> {
  const sections: string[] = [header(report), modelsSection(report), summarySection(report), checksSection(report)];
  sections.push('<h2 id="perplexity-charts">Perplexity: per-window NLL</h2>');
  if (report.perplexity.length === 0) sections.push(note('No perplexity text was given (--ppl).'));
  for (const [index, section] of report.perplexity.entries()) sections.push(await windowChart(section, index));
  sections.push('<h2 id="kld-chart">KL divergence</h2>', await kldChart(report.perplexity));
  sections.push('<h2 id="kobest-charts">KOBEST</h2>', await kobestChart(report.kobest));
  sections.push(
    `<footer>Made by polyquant from a ${escapeHtml(report.schema ?? 'polyquant.verify')} report${report.created === undefined ? '' : ` of ${escapeHtml(report.created)}`}. The page is self-contained: no script, and nothing is fetched.</footer>`,
  );
  return htmlPage({ title: `polyquant verify: ${basename(report.candidate.path)} vs ${basename(report.baseline.path)}`, body: sections.join('\n') });
}

// ---------------------------------------------------------------------------------------------------------
// Numbers as text

const isNumber = (value: Num): value is number => typeof value === 'number' && Number.isFinite(value);

/** Fixed decimals, or `–` for a number the report does not have (NaN is null in JSON). */
function fixed(value: Num, digits: number): string {
  return isNumber(value) ? value.toFixed(digits) : '–';
}

function signed(value: Num, digits: number): string {
  return isNumber(value) ? `${value > 0 ? '+' : ''}${value.toFixed(digits)}` : '–';
}

/** Four significant figures in the notation that shows them (stats.ts significant): 0.0123, 8.864e-4, 354.9. */
function significant(value: Num): string {
  return isNumber(value) ? significantDigits(value, 4) : '–';
}

/** A cell of `value`, with `± stderr` on a second line when there is one. */
function withStderr(value: Num, stderr: Num, format: (number: Num) => string): { text: string; detail?: string } {
  return isNumber(stderr) ? { text: format(value), detail: `± ${format(stderr)}` } : { text: format(value) };
}

const percent = (value: Num, digits: number): string => (isNumber(value) ? `${(100 * value).toFixed(digits)}%` : '–');
const points = (value: Num): string => (isNumber(value) ? signed(100 * value, 1) : '–');
const intervalPoints = (interval: VerifyPageInterval): string => `[${points(interval.low)}, ${points(interval.high)}]`;

/** The exact number behind a rounded cell, for readers who copy it (and for tests). */
function exact(value: Num): Record<string, string> {
  return { value: isNumber(value) ? String(value) : '' };
}

function basename(path: string): string {
  const parts = path.replace(/[/\\]+$/, '').split(/[/\\]/);
  return parts[parts.length - 1] || path;
}

// ---------------------------------------------------------------------------------------------------------
// Tables

function header(report: VerifyPageReport): string {
  const gated = report.gated ?? report.checks.length > 0;
  const failed = report.checks.filter((check) => !check.passed).length;
  const badge =
    report.verdict === 'fail'
      ? `<span class="verdict fail" data-verdict="fail">FAIL</span>`
      : `<span class="verdict ${gated ? 'pass' : 'none'}" data-verdict="pass">${gated ? 'PASS' : 'PASS · nothing gated'}</span>`;
  const summary =
    report.verdict === 'fail'
      ? `${failed} of ${report.checks.length} checks failed.`
      : gated
        ? `All ${report.checks.length} checks passed.`
        : 'No thresholds were given, so nothing was gated: the numbers below are measurements only.';
  return [
    `<h1>polyquant verify ${badge}</h1>`,
    `<p class="subtitle">${escapeHtml(basename(report.candidate.path))} against ${escapeHtml(basename(report.baseline.path))}. ${escapeHtml(summary)}</p>`,
  ].join('\n');
}

function deviceText(model: VerifyPageModel): string {
  const device = model.gpu !== undefined ? `${model.device} (${model.gpu})` : model.adapter === undefined ? model.device : `${model.device} (${model.adapter})`;
  return typeof model.threads === 'number' ? `${device}, ${model.threads} thread${model.threads === 1 ? '' : 's'}` : device;
}

function modelNotes(model: VerifyPageModel): string {
  const notes: string[] = [];
  if (model.simulate !== undefined) notes.push(`simulated ${model.simulate}`);
  if (model.artifact !== undefined) notes.push(`run on its ${model.artifact.type} GGUF ${model.artifact.file}${model.artifact.cached ? ' (cached)' : ''}`);
  return notes.join('; ');
}

function modelsSection(report: VerifyPageReport): string {
  const row = (role: string, model: VerifyPageModel): Cell[] => [role, { text: model.path, className: 'path' }, model.engine, deviceText(model), modelNotes(model)];
  return [
    '<h2 id="models">Models</h2>',
    htmlTable(['', 'path', 'engine', 'device', 'notes'], [row('candidate', report.candidate), row('baseline', report.baseline)], { id: 'models-table' }),
    provenanceNote(report.provenance),
  ].join('\n');
}

/** One line on how the report was made: versions, machine, command line, when and how long. */
function provenanceNote(provenance: VerifyPageProvenance | undefined): string {
  if (provenance === undefined) return '';
  const engines = Object.entries(provenance.engines ?? {}).map(([name, entry]: [string, { version?: string | null; llama_cpp_release?: string | null }]) => {
    const release = entry.llama_cpp_release ? ` (llama.cpp ${entry.llama_cpp_release})` : '';
    return `${name.replace(/_/g, '-')} ${entry.version ?? '?'}${release}`;
  });
  const facts = [
    provenance.polyquant === undefined ? '' : `polyquant ${provenance.polyquant}`,
    provenance.node === undefined ? '' : `node ${provenance.node}`,
    ...engines,
    provenance.platform ?? '',
    provenance.cpu ? `${provenance.cpu}${provenance.cpus === undefined ? '' : ` × ${provenance.cpus}`}` : '',
    provenance.started_at === undefined ? '' : `started ${provenance.started_at}`,
    isNumber(provenance.duration_s) ? `${significant(provenance.duration_s)} s` : '',
  ].filter((fact) => fact !== '');
  const command = provenance.command_line ? `<br><code>${escapeHtml(provenance.command_line.join(' '))}</code>` : '';
  return `<p class="note" id="provenance">${escapeHtml(facts.join(' · '))}${command}</p>`;
}

function sameTopP(value: VerifyPagePerplexitySection['comparison']['same_top_p']): { value: Num; stderr: Num } {
  if (value === null || value === undefined) return { value: undefined, stderr: undefined };
  if (typeof value === 'number') return { value, stderr: undefined };
  return { value: value.value, stderr: value.stderr };
}

function summarySection(report: VerifyPageReport): string {
  const parts = ['<h2 id="summary">Summary</h2>'];
  if (report.perplexity.length > 0) {
    const rows = report.perplexity.map((section): Cell[] => {
      const { comparison } = section;
      const kld = comparison.kld;
      const same = sameTopP(comparison.same_top_p);
      const top1 = isNumber(same.value) ? same.value : comparison.top1_agreement;
      const p99 = kld === null ? undefined : (kld.percentiles?.['p99'] ?? kld.p99);
      const deltaP = comparison.delta_p;
      const deltaPpl = isNumber(comparison.delta_ppl_pct) ? `${signed(comparison.delta_ppl_pct, 3)}%` : '–';
      return [
        // The file's name (its path in the tooltip and the provenance's command line): a path would crowd the numbers.
        { text: `${basename(section.file)} (${section.protocol}, ctx ${section.ctx})`, title: section.file, data: { file: section.file } },
        { text: fixed(comparison.positions ?? section.candidate.scored_tokens, 0), data: exact(comparison.positions ?? section.candidate.scored_tokens) },
        { ...withStderr(section.baseline.ppl, section.baseline.ppl_stderr, (value) => fixed(value, 3)), data: exact(section.baseline.ppl) },
        { ...withStderr(section.candidate.ppl, section.candidate.ppl_stderr, (value) => fixed(value, 3)), data: exact(section.candidate.ppl) },
        {
          text: deltaPpl,
          ...(isNumber(comparison.delta_ppl_pct_stderr) && { detail: `± ${fixed(comparison.delta_ppl_pct_stderr, 3)}%` }),
          data: exact(comparison.delta_ppl_pct),
        },
        kld === null ? { text: 'not measured', title: '--no-kld' } : { ...withStderr(kld.mean, kld.mean_stderr, significant), data: exact(kld.mean) },
        kld === null ? '–' : { text: significant(p99), data: exact(p99) },
        { text: percent(top1, 2), ...(isNumber(same.stderr) && { detail: `± ${percent(same.stderr, 2)}` }), data: exact(top1) },
        deltaP === null || deltaP === undefined
          ? '–'
          : { ...withStderr(isNumber(deltaP.rms) ? 100 * deltaP.rms : deltaP.rms, isNumber(deltaP.rms_stderr) ? 100 * deltaP.rms_stderr : undefined, (value) => fixed(value, 3)), data: exact(deltaP.rms) },
        { text: fixed(section.candidate.bits_per_byte, 4), data: exact(section.candidate.bits_per_byte) },
      ];
    });
    parts.push(
      '<h3>Perplexity</h3>',
      htmlTable(['text', 'positions', 'PPL baseline', 'PPL candidate', 'ΔPPL', 'mean KLD', 'p99 KLD', 'same top p', 'RMS Δp %', 'bits/byte (cand.)'], rows, {
        id: 'perplexity-table',
        numeric: [1, 2, 3, 4, 5, 6, 7, 8, 9],
      }),
      note('Uncertainties are llama-perplexity’s (± one standard error over positions); KLD in nats per token; same top p: the share of positions where both models’ most probable next token agree.'),
    );
  } else {
    parts.push(note('No perplexity text was given (--ppl).'));
  }
  if (report.kobest.length > 0) {
    const rows = report.kobest.map((section): Cell[] => {
      const { baseline, candidate, comparison } = section;
      return [
        `${section.task} ${section.shots}-shot`,
        { text: String(baseline.n), data: exact(baseline.n) },
        { ...withStderr(isNumber(baseline.acc) ? 100 * baseline.acc : baseline.acc, isNumber(baseline.acc_stderr) ? 100 * baseline.acc_stderr : undefined, (value) => fixed(value, 1)), data: exact(baseline.acc) },
        { ...withStderr(isNumber(candidate.acc) ? 100 * candidate.acc : candidate.acc, isNumber(candidate.acc_stderr) ? 100 * candidate.acc_stderr : undefined, (value) => fixed(value, 1)), data: exact(candidate.acc) },
        { text: `${points(comparison.delta_acc)} ${intervalPoints(comparison.delta_acc_ci)}`, data: exact(comparison.delta_acc) },
        { text: fixed(isNumber(baseline.macro_f1) ? 100 * baseline.macro_f1 : baseline.macro_f1, 1), data: exact(baseline.macro_f1) },
        { text: fixed(isNumber(candidate.macro_f1) ? 100 * candidate.macro_f1 : candidate.macro_f1, 1), data: exact(candidate.macro_f1) },
        { text: `${points(comparison.delta_macro_f1)} ${intervalPoints(comparison.delta_macro_f1_ci)}`, data: exact(comparison.delta_macro_f1) },
        {
          text: `${comparison.flips} (−${comparison.lost}/+${comparison.gained})${comparison.flips === 0 ? ' †' : ''}`,
          data: exact(comparison.flips),
          ...(comparison.flips === 0 && { title: comparison.ci_note ?? NO_CHANGE_NOTE }),
        },
        { text: fixed(comparison.mcnemar_p, 3), data: exact(comparison.mcnemar_p) },
      ];
    });
    parts.push(
      '<h3>KOBEST</h3>',
      htmlTable(['task', 'n', 'acc % base', 'acc % cand.', 'Δacc (95% CI)', 'macro-F1 % base', 'macro-F1 % cand.', 'ΔF1 (95% CI)', 'flips', 'McNemar p'], rows, {
        id: 'kobest-table',
        numeric: [1, 2, 3, 4, 5, 6, 7, 8, 9],
      }),
      note(
        `acc ± lm-eval's acc_stderr; Δ in points, with paired bootstrap 95% intervals over the same documents.${report.kobest.some((section) => section.comparison.flips === 0) ? ` † ${NO_CHANGE_NOTE}.` : ''}`,
      ),
    );
  }
  return parts.join('\n');
}

function checksSection(report: VerifyPageReport): string {
  const parts = ['<h2 id="checks">Checks</h2>'];
  if (report.checks.length === 0) {
    parts.push(note('No thresholds were given (--max-ppl-increase, --max-kld, --min-top1, --max-acc-drop, --max-f1-drop): nothing was gated.'));
    return parts.join('\n');
  }
  const rows = report.checks.map((check): Cell[] => [
    { text: check.passed ? 'pass' : 'FAIL', className: check.passed ? 'pass' : 'fail' },
    check.where,
    check.metric,
    { text: describeCheckValue(check), data: exact(check.value) },
    { text: describeCheckLimit(check), data: exact(check.limit) },
  ]);
  parts.push(htmlTable(['', 'where', 'metric', 'value', 'limit'], rows, { id: 'checks-table', numeric: [3, 4] }));
  return parts.join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// Charts

/** Windows averaged in runs of `size` so that at most MAX_WINDOW_POINTS remain; `size` 1 keeps them all. */
function binWindows(values: readonly Num[]): { size: number; means: number[] } {
  const size = Math.max(1, Math.ceil(values.length / MAX_WINDOW_POINTS));
  const means: number[] = [];
  for (let start = 0; start < values.length; start += size) {
    const run = values.slice(start, start + size);
    means.push(run.every(isNumber) ? run.reduce((sum, value) => sum + value, 0) / run.length : Number.NaN);
  }
  return { size, means };
}

async function windowChart(section: VerifyPagePerplexitySection, index: number): Promise<string> {
  const base = section.baseline.window_nll ?? [];
  const cand = section.candidate.window_nll ?? [];
  if (base.length === 0 || base.length !== cand.length) {
    return note(`${section.file}: the report holds no per-window NLL to draw.`);
  }
  const baseBins = binWindows(base);
  const candBins = binWindows(cand);
  const size = baseBins.size;
  const nll: { window: number; model: string; nll: number }[] = [];
  const delta: { window: number; delta: number }[] = [];
  baseBins.means.forEach((baseMean, bin) => {
    const candMean = candBins.means[bin] as number;
    const window = bin + 1;
    // A window whose NLL is not finite (a broken candidate) has no point; the table says where it broke.
    if (Number.isFinite(baseMean)) nll.push({ window, model: 'baseline', nll: baseMean });
    if (Number.isFinite(candMean)) nll.push({ window, model: 'candidate', nll: candMean });
    if (Number.isFinite(baseMean) && Number.isFinite(candMean)) delta.push({ window, delta: candMean - baseMean });
  });
  const count = baseBins.means.length;
  const largestDelta = Math.max(1e-6, ...delta.map((item) => Math.abs(item.delta)));
  const topHeight = 240;
  const gap = 56;
  const bottomHeight = 120;
  const unit = size === 1 ? 'window' : `run of ${size} windows`;
  const xAxis = (title: string) => ({ orient: 'bottom', scale: 'x', title, grid: false, tickMinStep: 1, format: 'd', ...AXIS_TEXT_STYLE });
  const spec = {
    $schema: 'https://vega.github.io/schema/vega/v6.json',
    width: CHART_WIDTH - 140,
    height: topHeight + gap + bottomHeight,
    padding: 8,
    autosize: { type: 'pad' },
    background: '#ffffff',
    title: {
      text: `Mean NLL per ${unit}: ${basename(section.file)}`,
      subtitle: `${count} ${size === 1 ? 'windows' : 'runs'} of ctx ${section.ctx} · nats per token · below: candidate − baseline (red: candidate worse)`,
      ...TITLE_STYLE,
    },
    data: [
      { name: 'nll', values: nll },
      { name: 'delta', values: delta },
    ],
    scales: [
      { name: 'x', type: 'linear', domain: [0.5, count + 0.5], range: 'width', zero: false, nice: false },
      { name: 'color', type: 'ordinal', domain: ['baseline', 'candidate'], range: [BASELINE_STYLE.color, CANDIDATE_STYLE.color] },
    ],
    legends: [{ fill: 'color', stroke: 'color', orient: 'top-right', direction: 'horizontal', symbolType: 'circle', title: null, ...LEGEND_TEXT_STYLE }],
    marks: [
      {
        type: 'group',
        encode: { enter: { width: { signal: 'width' }, height: { value: topHeight } } },
        scales: [{ name: 'y', type: 'linear', domain: { data: 'nll', field: 'nll' }, range: [topHeight, 0], zero: false, nice: true }],
        axes: [
          { orient: 'left', scale: 'y', title: 'mean NLL (nats/token)', grid: true, gridColor: GRID_COLOR, tickCount: 6, ...AXIS_TEXT_STYLE },
          { ...xAxis(''), labels: count <= 60 },
        ],
        marks: [
          {
            type: 'group',
            from: { facet: { name: 'series', data: 'nll', groupby: 'model' } },
            marks: [
              {
                type: 'line',
                from: { data: 'series' },
                encode: {
                  enter: {
                    x: { scale: 'x', field: 'window' },
                    y: { scale: 'y', field: 'nll' },
                    stroke: { scale: 'color', field: 'model' },
                    // The baseline wide and pale under the candidate: where the two agree, both stay visible.
                    strokeWidth: [{ test: "datum.model === 'baseline'", value: 4 }, { value: 1.5 }],
                    strokeOpacity: [{ test: "datum.model === 'baseline'", value: 0.45 }, { value: 0.9 }],
                  },
                },
              },
            ],
          },
          {
            type: 'symbol',
            name: 'window-nll-points',
            from: { data: 'nll' },
            encode: {
              enter: {
                x: { scale: 'x', field: 'window' },
                y: { scale: 'y', field: 'nll' },
                shape: { value: 'circle' },
                size: { value: count > 200 ? 6 : 28 },
                fill: { scale: 'color', field: 'model' },
                stroke: { value: '#ffffff' },
                strokeWidth: { value: count > 200 ? 0 : 0.75 },
              },
            },
          },
        ],
      },
      {
        type: 'group',
        encode: { enter: { y: { value: topHeight + gap }, width: { signal: 'width' }, height: { value: bottomHeight } } },
        scales: [{ name: 'dy', type: 'linear', domain: [-largestDelta, largestDelta], range: [bottomHeight, 0], nice: true, zero: true }],
        axes: [
          { orient: 'left', scale: 'dy', title: 'Δ NLL', grid: true, gridColor: GRID_COLOR, tickCount: 4, format: '.1e', ...AXIS_TEXT_STYLE },
          xAxis(size === 1 ? 'window' : `run of ${size} windows`),
        ],
        marks: [
          {
            type: 'rect',
            name: 'window-nll-delta',
            from: { data: 'delta' },
            encode: {
              enter: {
                xc: { scale: 'x', field: 'window' },
                width: { signal: `max(1, 0.7 * width / ${count})` },
                y: { scale: 'dy', field: 'delta' },
                y2: { scale: 'dy', value: 0 },
                fill: [{ test: 'datum.delta > 0', value: WORSE_COLOR }, { value: BETTER_COLOR }],
              },
            },
          },
          {
            type: 'rule',
            encode: { enter: { x: { value: 0 }, x2: { signal: 'width' }, y: { scale: 'dy', value: 0 }, stroke: { value: '#666666' }, strokeWidth: { value: 1 } } },
          },
        ],
      },
    ],
  } as unknown as Spec;
  const svg = await renderVegaSvg(spec, { idPrefix: `nll${index}` });
  return chartFigure(
    'window-nll',
    svg,
    `${section.file}: each ${unit}'s mean negative log-likelihood of its scored tokens under the baseline and the candidate (window_nll in the JSON report), and their difference.`,
    { file: section.file, windows: count },
  );
}

interface KldPoint {
  readonly text: string;
  readonly quantile: string;
  readonly kld: number;
  readonly plotted: number;
}

async function kldChart(sections: readonly VerifyPagePerplexitySection[]): Promise<string> {
  const measured = sections.filter((section) => section.comparison.kld !== null);
  if (measured.length === 0) {
    return note(sections.length === 0 ? 'No perplexity text was given, so no KL divergence was measured.' : 'KL divergence was not measured (--no-kld).');
  }
  const texts = measured.map((section) => basename(section.file));
  // Two texts of one name (a/valid.txt, b/valid.txt) keep their full paths apart.
  const names = texts.map((text, index) => (texts.indexOf(text) === texts.lastIndexOf(text) ? text : (measured[index] as VerifyPagePerplexitySection).file));
  const raw: { text: string; quantile: string; kld: number }[] = [];
  const means: { text: string; kld: number }[] = [];
  measured.forEach((section, index) => {
    const kld = section.comparison.kld as VerifyPageKld;
    const name = names[index] as string;
    for (const { key, label } of KLD_QUANTILES) {
      const value = key === 'max' ? kld.max : (kld.percentiles?.[key] ?? (key === 'p50' ? kld.median : key === 'p99' ? kld.p99 : undefined));
      if (isNumber(value) && value >= 0) raw.push({ text: name, quantile: label, kld: value });
    }
    if (isNumber(kld.mean)) means.push({ text: name, kld: kld.mean });
  });
  if (raw.length === 0) return note('The report holds no KL-divergence quantiles to draw.');
  const positive = [...raw.map((point) => point.kld), ...means.map((mean) => mean.kld)].filter((value) => value >= KLD_DISPLAY_MIN);
  const smallest = positive.length > 0 ? Math.min(...positive) : 1e-6;
  const largest = positive.length > 0 ? Math.max(...positive) : 1e-6;
  const hasZero = raw.some((point) => point.kld < KLD_DISPLAY_MIN);
  const zeroLine = Math.max(KLD_DISPLAY_MIN, Number(`1e${Math.floor(Math.log10(smallest)) - 1}`));
  const plotted: KldPoint[] = raw.map((point) => ({ ...point, plotted: point.kld < KLD_DISPLAY_MIN ? zeroLine : point.kld }));
  const yMin = (hasZero ? zeroLine : smallest) / 2;
  const yMax = largest * 2;
  const colors = names.map((_, index) => (SERIES_PALETTE[index % SERIES_PALETTE.length] as (typeof SERIES_PALETTE)[number]).color);
  const positions = measured.map((section) => section.comparison.positions).filter(isNumber);
  const spec = {
    $schema: 'https://vega.github.io/schema/vega/v6.json',
    width: CHART_WIDTH - 340,
    height: 300,
    padding: 8,
    autosize: { type: 'pad' },
    background: '#ffffff',
    title: {
      text: 'KL divergence (baseline ‖ candidate) per position: quantiles',
      subtitle: `${positions.length > 0 ? `${positions.reduce((sum, value) => sum + value, 0)} positions; ` : ''}nats, log scale; dashed: the mean${hasZero ? `; KLD 0 drawn at ${zeroLine.toExponential(0)}` : ''}`,
      ...TITLE_STYLE,
    },
    data: [
      { name: 'quantiles', values: plotted },
      { name: 'means', values: means },
      { name: 'zero', values: hasZero ? [{ kld: zeroLine }] : [] },
    ],
    scales: [
      { name: 'x', type: 'point', domain: KLD_QUANTILES.map((quantile) => quantile.label), range: 'width', padding: 0.5 },
      { name: 'y', type: 'log', domain: [yMin, yMax], range: 'height', nice: true },
      { name: 'color', type: 'ordinal', domain: names, range: colors },
    ],
    axes: [
      { orient: 'bottom', scale: 'x', title: 'quantile over positions', grid: true, gridColor: GRID_COLOR, ...AXIS_TEXT_STYLE },
      { orient: 'left', scale: 'y', title: 'KLD (nats)', grid: true, gridColor: GRID_COLOR, format: '.0e', values: decadeTicks(yMin, yMax), ...AXIS_TEXT_STYLE },
    ],
    legends: [{ title: 'text', stroke: 'color', fill: 'color', symbolType: 'circle', orient: 'right', labelLimit: 260, ...LEGEND_TEXT_STYLE }],
    marks: [
      {
        type: 'rule',
        from: { data: 'means' },
        encode: {
          enter: {
            x: { value: 0 },
            x2: { signal: 'width' },
            y: { scale: 'y', field: 'kld' },
            stroke: { scale: 'color', field: 'text' },
            strokeDash: { value: [6, 4] },
            strokeWidth: { value: 1.5 },
          },
        },
      },
      {
        type: 'rule',
        from: { data: 'zero' },
        encode: { enter: { x: { value: 0 }, x2: { signal: 'width' }, y: { scale: 'y', field: 'kld' }, stroke: { value: RULE_COLOR }, strokeDash: { value: [2, 3] } } },
      },
      {
        type: 'text',
        from: { data: 'zero' },
        encode: {
          enter: {
            x: { value: 4 },
            y: { scale: 'y', field: 'kld', offset: -4 },
            text: { value: 'KLD 0' },
            baseline: { value: 'bottom' },
            fill: { value: '#777777' },
            font: { value: FONT_FAMILIES },
            fontSize: { value: 11 },
          },
        },
      },
      {
        type: 'group',
        from: { facet: { name: 'series', data: 'quantiles', groupby: 'text' } },
        marks: [
          {
            type: 'line',
            from: { data: 'series' },
            encode: { enter: { x: { scale: 'x', field: 'quantile' }, y: { scale: 'y', field: 'plotted' }, stroke: { scale: 'color', field: 'text' }, strokeWidth: { value: 2 } } },
          },
        ],
      },
      {
        type: 'symbol',
        name: 'kld-quantiles',
        from: { data: 'quantiles' },
        encode: {
          enter: {
            x: { scale: 'x', field: 'quantile' },
            y: { scale: 'y', field: 'plotted' },
            size: { value: 50 },
            fill: { scale: 'color', field: 'text' },
            stroke: { value: '#ffffff' },
            strokeWidth: { value: 1 },
          },
        },
      },
    ],
  } as unknown as Spec;
  const svg = await renderVegaSvg(spec, { idPrefix: 'kld' });
  const old = measured.some((section) => section.comparison.kld?.percentiles === undefined);
  return chartFigure(
    'kld',
    svg,
    `Quantiles of the per-position KL divergence from the baseline's next-token distribution to the candidate's, as llama-perplexity --kl-divergence prints them${old ? ' (this report holds only the median, 99th percentile and maximum)' : ''}.`,
    { points: plotted.length },
  );
}

interface KobestBar {
  readonly row: string;
  readonly model: 'baseline' | 'candidate';
  readonly slot: number;
  readonly value: number;
  readonly low: number | null;
  readonly high: number | null;
}

interface KobestDelta {
  readonly row: string;
  readonly metric: 'Δacc' | 'ΔF1';
  readonly slot: number;
  readonly value: number;
  readonly low: number;
  readonly high: number;
}

async function kobestChart(sections: readonly VerifyPageKobestSection[]): Promise<string> {
  if (sections.length === 0) return note('KOBEST was not run (--kobest).');
  const rows = sections.map((section) => `${section.task} ${section.shots}-shot`);
  const accBars: KobestBar[] = [];
  const f1Bars: KobestBar[] = [];
  const deltas: KobestDelta[] = [];
  const unchanged: { row: string }[] = [];
  sections.forEach((section, index) => {
    const row = rows[index] as string;
    (['baseline', 'candidate'] as const).forEach((model, slot) => {
      const numbers = section[model];
      if (isNumber(numbers.acc)) {
        const stderr = numbers.acc_stderr;
        const half = isNumber(stderr) ? Z95 * stderr : undefined;
        accBars.push({
          row,
          model,
          slot,
          value: 100 * numbers.acc,
          low: half === undefined ? null : 100 * Math.max(0, numbers.acc - half),
          high: half === undefined ? null : 100 * Math.min(1, numbers.acc + half),
        });
      }
      if (isNumber(numbers.macro_f1)) {
        const ci = numbers.macro_f1_ci;
        const drawn = ci !== undefined && isNumber(ci.low) && isNumber(ci.high);
        f1Bars.push({ row, model, slot, value: 100 * numbers.macro_f1, low: drawn ? 100 * (ci.low as number) : null, high: drawn ? 100 * (ci.high as number) : null });
      }
    });
    const { comparison } = section;
    const addDelta = (metric: KobestDelta['metric'], slot: number, value: Num, ci: VerifyPageInterval): void => {
      if (isNumber(value)) deltas.push({ row, metric, slot, value: 100 * value, low: 100 * (isNumber(ci.low) ? ci.low : value), high: 100 * (isNumber(ci.high) ? ci.high : value) });
    };
    addDelta('Δacc', 0, comparison.delta_acc, comparison.delta_acc_ci);
    addDelta('ΔF1', 1, comparison.delta_macro_f1, comparison.delta_macro_f1_ci);
    if (comparison.flips === 0) unchanged.push({ row });
  });
  const deltaExtent = Math.max(2, ...deltas.flatMap((delta) => [Math.abs(delta.low), Math.abs(delta.high)])) * 1.1;
  const rowHeight = 56;
  const height = rows.length * rowHeight;
  const panelWidth = 260;
  const panelGap = 44;
  const labelRoom = 8;
  const band = { name: 'y', type: 'band', domain: rows, range: [0, height], paddingInner: 0.25, paddingOuter: 0.15 };
  const barY = { signal: "scale('y', datum.row) + datum.slot * bandwidth('y') / 2" };
  const barHeight = { signal: "bandwidth('y') / 2 - 1" };
  const whiskerY = { signal: "scale('y', datum.row) + (datum.slot + 0.5) * bandwidth('y') / 2" };
  const barPanel = (name: string, data: string, title: string, x: number, showRows: boolean) => ({
    type: 'group',
    encode: { enter: { x: { value: x }, width: { value: panelWidth }, height: { value: height } } },
    scales: [{ name: 'x', type: 'linear', domain: [0, 100], range: [0, panelWidth] }],
    axes: [
      { orient: 'bottom', scale: 'x', title, grid: true, gridColor: GRID_COLOR, tickCount: 5, ...AXIS_TEXT_STYLE },
      { orient: 'left', scale: 'y', title: null, labels: showRows, ticks: showRows, domain: true, labelLimit: 220, labelPadding: labelRoom, ...AXIS_TEXT_STYLE },
    ],
    marks: [
      {
        type: 'rect',
        name,
        from: { data },
        encode: {
          enter: {
            x: { scale: 'x', value: 0 },
            x2: { scale: 'x', field: 'value' },
            y: barY,
            height: barHeight,
            fill: { scale: 'color', field: 'model' },
          },
        },
      },
      {
        type: 'rule',
        name: `${name}-ci`,
        from: { data: `${data}-ci` },
        encode: { enter: { x: { scale: 'x', field: 'low' }, x2: { scale: 'x', field: 'high' }, y: whiskerY, stroke: { value: '#333333' }, strokeWidth: { value: 1.5 } } },
      },
      {
        type: 'text',
        from: { data },
        encode: {
          enter: {
            x: { value: 4 },
            y: whiskerY,
            text: { signal: "format(datum.value, '.1f')" },
            baseline: { value: 'middle' },
            fill: { value: '#ffffff' },
            font: { value: FONT_FAMILIES },
            fontSize: { value: 10 },
            fontWeight: { value: 'bold' },
          },
        },
      },
    ],
  });
  const deltaX = 2 * (panelWidth + panelGap);
  const spec = {
    $schema: 'https://vega.github.io/schema/vega/v6.json',
    width: 3 * panelWidth + 2 * panelGap,
    height,
    padding: 8,
    autosize: { type: 'pad' },
    background: '#ffffff',
    title: {
      text: 'KOBEST: baseline and candidate on the same documents',
      subtitle: 'whiskers: 95% intervals · right: candidate − baseline, in points',
      ...TITLE_STYLE,
    },
    data: [
      { name: 'acc', values: accBars },
      { name: 'acc-ci', source: 'acc', transform: [{ type: 'filter', expr: 'datum.low !== null' }] },
      { name: 'f1', values: f1Bars },
      { name: 'f1-ci', source: 'f1', transform: [{ type: 'filter', expr: 'datum.low !== null' }] },
      { name: 'deltas', values: deltas },
      { name: 'unchanged', values: unchanged },
    ],
    scales: [
      band,
      { name: 'color', type: 'ordinal', domain: ['baseline', 'candidate'], range: [BASELINE_STYLE.color, CANDIDATE_STYLE.color] },
      { name: 'deltaColor', type: 'ordinal', domain: ['Δacc', 'ΔF1'], range: [SERIES_PALETTE[2].color, SERIES_PALETTE[3].color] },
    ],
    legends: [
      { fill: 'color', orient: 'top', direction: 'horizontal', title: null, symbolType: 'square', ...LEGEND_TEXT_STYLE },
      { fill: 'deltaColor', stroke: 'deltaColor', orient: 'top', direction: 'horizontal', title: null, symbolType: 'circle', ...LEGEND_TEXT_STYLE },
    ],
    marks: [
      barPanel('kobest-acc-bars', 'acc', 'accuracy (%)', 0, true),
      barPanel('kobest-f1-bars', 'f1', 'macro-F1 (%)', panelWidth + panelGap, false),
      {
        type: 'group',
        encode: { enter: { x: { value: deltaX }, width: { value: panelWidth }, height: { value: height } } },
        scales: [{ name: 'dx', type: 'linear', domain: [-deltaExtent, deltaExtent], range: [0, panelWidth], nice: true }],
        axes: [
          { orient: 'bottom', scale: 'dx', title: 'candidate − baseline (points)', grid: true, gridColor: GRID_COLOR, tickCount: 5, ...AXIS_TEXT_STYLE },
          { orient: 'left', scale: 'y', title: null, labels: false, ticks: false, domain: true, ...AXIS_TEXT_STYLE },
        ],
        marks: [
          {
            type: 'rule',
            encode: { enter: { x: { scale: 'dx', value: 0 }, y: { value: 0 }, y2: { value: height }, stroke: { value: '#666666' }, strokeWidth: { value: 1 } } },
          },
          {
            type: 'rule',
            name: 'kobest-delta-ci',
            from: { data: 'deltas' },
            encode: { enter: { x: { scale: 'dx', field: 'low' }, x2: { scale: 'dx', field: 'high' }, y: whiskerY, stroke: { scale: 'deltaColor', field: 'metric' }, strokeWidth: { value: 2 } } },
          },
          {
            type: 'symbol',
            name: 'kobest-delta-points',
            from: { data: 'deltas' },
            encode: {
              enter: {
                x: { scale: 'dx', field: 'value' },
                y: whiskerY,
                size: { value: 60 },
                fill: { scale: 'deltaColor', field: 'metric' },
                stroke: { value: '#ffffff' },
                strokeWidth: { value: 1 },
              },
            },
          },
          {
            type: 'text',
            name: 'kobest-no-flips',
            from: { data: 'unchanged' },
            encode: {
              enter: {
                x: { value: panelWidth - 4 },
                y: { signal: "scale('y', datum.row) + bandwidth('y') / 2" },
                text: { value: 'no flips: [0, 0] by construction' },
                align: { value: 'right' },
                baseline: { value: 'middle' },
                fill: { value: '#777777' },
                font: { value: FONT_FAMILIES },
                fontSize: { value: 10 },
              },
            },
          },
        ],
      },
    ],
  } as unknown as Spec;
  const svg = await renderVegaSvg(spec, { idPrefix: 'kobest' });
  return chartFigure(
    'kobest',
    svg,
    "Each task × shots, both models on the same documents. Accuracy whiskers: acc ± 1.96 · acc_stderr (lm-eval's standard error); macro-F1 whiskers: its bootstrap 95% interval; differences: paired bootstrap 95% intervals. An interval of [0, 0] where no prediction flipped is a consequence of the pairing, not a measured precision.",
    { rows: rows.length },
  );
}
