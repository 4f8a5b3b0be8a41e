/**
 * The verification report: a documented, versioned JSON shape (schema `polyquant.verify/2`, docs/schemas.md;
 * field names in snake_case as lm-eval and llama.cpp report them), and its terminal and Markdown renderings.
 *
 * Error bars follow the tools their readers know: perplexity, its ratio and difference, KL divergence, Δp
 * and "same top p" with llama-perplexity's uncertainties (stats.ts DistributionComparison), KOBEST accuracy
 * and macro-F1 with lm-evaluation-harness's (compare-kobest.ts), and a `results` block shaped like the
 * harness's own output so dashboards that read lm-eval JSON read ours.
 *
 * verify/2 (from verify/1): `ppl_stderr` in each PerplexityNumbers; `delta_ppl_pct_stderr`, `delta_ppl`,
 * `ppl_ratio`, `ln_ppl_ratio`, `ln_ppl_correlation`, `delta_p` and `same_top_p` in each comparison; `kld`
 * gains `mean_stderr`, `min` and `percentiles` (its `median` and `p99` stay); KOBEST numbers gain
 * `acc_stderr`, `macro_f1_stderr`, `macro_f1_ci` (and `acc_norm_stderr`), sections `split_documents`, the
 * comparison `ci_note`; models gain `threads`; the report gains `provenance`, `gated` and the lm-eval block
 * (`results`, `configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples`); `thresholds` and `checks`
 * are snake_case (`max_ppl_increase_pct`, …; each check names its `unit`).
 */
import { type KobestSection, NO_CHANGE_NOTE } from './compare-kobest.js';
import { KOBEST_TASK_NAMES } from './kobest/tasks.js';
import type { Provenance } from './provenance.js';
import { type DistributionComparison, type Estimate, type Interval, PERCENTILES, type PercentileName, significant } from './stats.js';
import { type Check, describeCheckLimit, describeCheckValue, type Thresholds, THRESHOLD_FLAGS } from './thresholds.js';
import type { SavedBaselineNote } from './saved-baseline.js';

export type { KobestNumbers, KobestSection } from './compare-kobest.js';
export type { Estimate } from './stats.js';

export const VERIFY_SCHEMA = 'polyquant.verify/2';

export interface PerplexityNumbers {
  readonly ppl: number;
  /** llama-perplexity's PPL uncertainty: ppl × the standard error of the mean NLL over scored positions. */
  readonly ppl_stderr: number;
  readonly nll_sum: number;
  readonly scored_tokens: number;
  readonly bytes: number;
  readonly bits_per_byte: number;
  /** Mean NLL of each window, in window order. */
  readonly window_nll: readonly number[];
  /**
   * Scored positions whose output was not a probability distribution (NaN / infinite logits): when
   * above 0, ppl, nll_sum and bits_per_byte are NaN (null in JSON) and every gate fails.
   */
  readonly non_finite_positions: number;
  /** Text token index of the first such position, or null. */
  readonly first_non_finite_token: number | null;
}

/** llama-perplexity's percentiles of a per-position quantity: 99.9 %, 99 %, 95 %, 90 %, median, 10 %, 5 %, 1 %. */
export type Percentiles = Readonly<Record<PercentileName, number>>;

export interface KldNumbers {
  readonly mean: number;
  readonly mean_stderr: number;
  /** = percentiles.p50 */
  readonly median: number;
  /** = percentiles.p99 (kept from verify/1) */
  readonly p99: number;
  readonly max: number;
  readonly min: number;
  readonly percentiles: Percentiles;
}

export interface DeltaPNumbers {
  /** Mean of p_candidate(next token) − p_baseline(next token), as a fraction (llama-perplexity prints ×100 %). */
  readonly mean: number;
  readonly mean_stderr: number;
  readonly rms: number;
  readonly rms_stderr: number;
  readonly percentiles: Percentiles;
  readonly max: number;
  readonly min: number;
}

export interface PerplexityComparison {
  /** (PPL(candidate) / PPL(baseline) − 1) × 100. */
  readonly delta_ppl_pct: number;
  /** 100 × ppl_ratio.stderr. */
  readonly delta_ppl_pct_stderr: number;
  /** llama-perplexity "Mean PPL(Q)-PPL(base)". */
  readonly delta_ppl: Estimate;
  /** "Mean PPL(Q)/PPL(base)". */
  readonly ppl_ratio: Estimate;
  /** "Mean ln(PPL(Q)/PPL(base))". */
  readonly ln_ppl_ratio: Estimate;
  /** "Cor(ln(PPL(Q)), ln(PPL(base)))": correlation of the two models' per-position NLL. */
  readonly ln_ppl_correlation: number;
  /** KL(baseline ‖ candidate) per position, nats; null with --no-kld. */
  readonly kld: KldNumbers | null;
  readonly delta_p: DeltaPNumbers | null;
  /** "Same top p": top-1 agreement ± sqrt(p(1 − p)/(n − 1)). */
  readonly same_top_p: Estimate;
  readonly top1_agreement: number;
  readonly positions: number;
}

export interface PerplexitySection {
  readonly file: string;
  readonly protocol: string;
  readonly ctx: number;
  readonly stride?: number;
  readonly tokens: number;
  readonly baseline: PerplexityNumbers;
  readonly candidate: PerplexityNumbers;
  readonly comparison: PerplexityComparison;
}

export interface ModelDescription {
  readonly path: string;
  readonly engine: string;
  readonly device: string;
  /** Threads the engine computed with (provenance.ts engineThreads); null where the device decides (webgpu). */
  readonly threads?: number | null;
  /** With device `gpu`: the backend that ran it (node-llama-cpp's `cuda`/`vulkan`/`metal`, or llama.cpp's device name). */
  readonly gpu?: string;
  /** The webgpu engine's adapter, e.g. "software WebGPU adapter: SwiftShader driver 5.0.0" (device cpu). */
  readonly adapter?: string;
  /** The ggml type applied by --simulate, if any. */
  readonly simulate?: string;
  /**
   * When an HF folder was run by llama.cpp: the GGUF it was converted to (baseline-cache.ts), its type,
   * whether it was already in the cache, and the seconds hashing/converting took in this run.
   */
  readonly artifact?: { readonly file: string; readonly type: string; readonly cached: boolean; readonly seconds: number };
  /**
   * A saved baseline (saved-baseline.ts): `role` `read`, this run compared against the file and loaded no
   * baseline model (the rest of this description is the baseline as it was when saved); `written`, this run
   * saved its baseline to the file. `created` and `polyquant_version` are the saving run's; `bytes` the file's.
   */
  readonly saved_baseline?: SavedBaselineNote;
}

/**
 * The candidate's KOBEST results as lm-evaluation-harness (≥ 0.4) writes its results JSON, so dashboards
 * that read the harness's files read ours: `results[task]` with `"<metric>,none"` keys and `alias`, and
 * `configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples` beside it. Metric names are the polyglot
 * branch's (`acc`, `macro_f1`, HellaSwag's `acc_norm`), which the protocol follows (specs/eval.md §2a), plus
 * `f1,none` — lm-eval 0.4's name for the same macro-F1. With several shot counts of one task, each gets the
 * key `<task>_<N>shot` (alias `<task> (N-shot)`); with one, the key is the task.
 */
export interface LmEvalBlock {
  readonly results: Readonly<Record<string, Readonly<Record<string, number | string | null>>>>;
  readonly configs: Readonly<Record<string, LmEvalTaskConfig>>;
  readonly versions: Readonly<Record<string, number>>;
  readonly 'n-shot': Readonly<Record<string, number>>;
  readonly higher_is_better: Readonly<Record<string, Readonly<Record<string, boolean>>>>;
  readonly 'n-samples': Readonly<Record<string, { readonly original: number | null; readonly effective: number }>>;
}

export interface LmEvalTaskConfig {
  readonly task: string;
  readonly dataset_path: string;
  readonly dataset_name: string;
  readonly output_type: 'multiple_choice';
  readonly training_split: 'train';
  readonly validation_split: 'validation';
  readonly test_split: 'test';
  /** The split this run evaluated (the harness evaluates test). */
  readonly evaluated_split: string;
  readonly num_fewshot: number;
  readonly metric_list: readonly { readonly metric: string; readonly aggregation: string; readonly higher_is_better: boolean }[];
  readonly metadata: { readonly version: number };
}

export interface VerifyReport extends LmEvalBlock {
  readonly schema: typeof VERIFY_SCHEMA;
  readonly created: string;
  readonly provenance: Provenance;
  readonly candidate: ModelDescription;
  readonly baseline: ModelDescription;
  readonly perplexity: readonly PerplexitySection[];
  readonly kobest: readonly KobestSection[];
  readonly thresholds: Thresholds;
  readonly checks: readonly Check[];
  /** Whether any threshold was checked. false: nothing was gated, and `pass` only means the run completed. */
  readonly gated: boolean;
  readonly verdict: 'pass' | 'fail';
}

/** `cpu`, or `gpu (cuda)` with the backend that ran it, or `cpu (software WebGPU adapter: …)`; plus the threads. */
function deviceNote(model: ModelDescription): string {
  const device = model.gpu !== undefined ? `${model.device} (${model.gpu})` : model.adapter === undefined ? model.device : `${model.device} (${model.adapter})`;
  return typeof model.threads === 'number' ? `${device}, ${model.threads} thread${model.threads === 1 ? '' : 's'}` : device;
}

/** ` on f16 GGUF FILE` when the model ran from a converted file, and the saved baseline it came from or went to; else nothing. */
function artifactNote(model: ModelDescription): string {
  const artifact = model.artifact === undefined ? '' : ` on its ${model.artifact.type} GGUF ${model.artifact.file}${model.artifact.cached ? ', cached' : ''}`;
  const saved = model.saved_baseline;
  if (saved === undefined) return artifact;
  // Where the baseline's numbers came from (no model ran in this run) or went to.
  return saved.role === 'read'
    ? `${artifact}, from the saved baseline ${saved.file} saved ${saved.created} by polyquant ${saved.polyquant_version}`
    : `${artifact}, saved to ${saved.file}, ${saved.bytes} bytes`;
}

const percentileNumbers = (percentiles: Readonly<Record<PercentileName, number>>): Percentiles =>
  Object.fromEntries(PERCENTILES.map(([name]) => [name, percentiles[name]])) as Percentiles;
const NOT_MEASURED: Estimate = { value: Number.NaN, stderr: Number.NaN };

/**
 * A text's comparison section from the comparer's statistics. `full`: KL divergence was computed (full
 * distributions from both models); without it `kld` is null, while Δp, same-top-p and the PPL ratio come
 * from the target log-probabilities every engine returns.
 */
export function comparisonSection(result: DistributionComparison, full: boolean, deltaPplPct: number): PerplexityComparison {
  const ratio = result.lnPplRatio === null ? NOT_MEASURED : { value: Math.exp(result.lnPplRatio.value), stderr: Math.exp(result.lnPplRatio.value) * result.lnPplRatio.stderr };
  const kld = full ? result.kld : null;
  return {
    delta_ppl_pct: deltaPplPct,
    delta_ppl_pct_stderr: 100 * ratio.stderr,
    delta_ppl: result.pplDifference ?? NOT_MEASURED,
    ppl_ratio: ratio,
    ln_ppl_ratio: result.lnPplRatio ?? NOT_MEASURED,
    ln_ppl_correlation: result.nll?.correlation ?? Number.NaN,
    kld:
      kld === null
        ? null
        : {
            mean: kld.mean,
            mean_stderr: kld.meanStderr,
            median: kld.percentiles.p50,
            p99: kld.percentiles.p99,
            max: kld.max,
            min: kld.min,
            percentiles: percentileNumbers(kld.percentiles),
          },
    delta_p:
      result.deltaP === null
        ? null
        : {
            mean: result.deltaP.mean,
            mean_stderr: result.deltaP.meanStderr,
            rms: result.deltaP.rms,
            rms_stderr: result.deltaP.rmsStderr,
            percentiles: percentileNumbers(result.deltaP.percentiles),
            max: result.deltaP.max,
            min: result.deltaP.min,
          },
    same_top_p: result.sameTopP,
    top1_agreement: result.top1Agreement,
    positions: result.positions,
  };
}

/** A PerplexityNumbers with `ppl_stderr` (ppl × stderr of the mean NLL) placed after `ppl`. */
export function withPplStderr(numbers: Omit<PerplexityNumbers, 'ppl_stderr'>, meanNll: Estimate | undefined): PerplexityNumbers {
  const { ppl, ...rest } = numbers;
  return { ppl, ppl_stderr: ppl * (meanNll?.stderr ?? Number.NaN), ...rest };
}

/** The candidate's KOBEST sections as lm-evaluation-harness's results JSON (LmEvalBlock). */
export function lmEvalBlock(kobest: readonly KobestSection[]): LmEvalBlock {
  const shotCounts = new Map<string, Set<number>>();
  for (const section of kobest) shotCounts.set(section.task, (shotCounts.get(section.task) ?? new Set()).add(section.shots));
  const block = { results: {}, configs: {}, versions: {}, 'n-shot': {}, higher_is_better: {}, 'n-samples': {} } as {
    [K in keyof LmEvalBlock]: Record<string, LmEvalBlock[K][string]>;
  };
  for (const section of kobest) {
    const single = (shotCounts.get(section.task)?.size ?? 1) === 1;
    const key = single ? section.task : `${section.task}_${section.shots}shot`;
    const numbers = section.candidate;
    const finiteOrNull = (value: number | undefined): number | null => (value === undefined || !Number.isFinite(value) ? null : value);
    block.results[key] = {
      alias: single ? section.task : `${section.task} (${section.shots}-shot)`,
      'acc,none': finiteOrNull(numbers.acc),
      'acc_stderr,none': finiteOrNull(numbers.acc_stderr),
      'macro_f1,none': finiteOrNull(numbers.macro_f1),
      'macro_f1_stderr,none': finiteOrNull(numbers.macro_f1_stderr),
      'f1,none': finiteOrNull(numbers.macro_f1),
      'f1_stderr,none': finiteOrNull(numbers.macro_f1_stderr),
      ...(numbers.acc_norm !== undefined && { 'acc_norm,none': finiteOrNull(numbers.acc_norm), 'acc_norm_stderr,none': finiteOrNull(numbers.acc_norm_stderr) }),
    };
    const hellaswag = numbers.acc_norm !== undefined;
    const name = section.task.replace(/^kobest_/, '');
    block.configs[key] = {
      task: section.task,
      dataset_path: 'skt/kobest_v1',
      dataset_name: (KOBEST_TASK_NAMES as readonly string[]).includes(name) ? name : section.task,
      output_type: 'multiple_choice',
      training_split: 'train',
      validation_split: 'validation',
      test_split: 'test',
      evaluated_split: section.split,
      num_fewshot: section.shots,
      metric_list: [
        { metric: 'acc', aggregation: 'mean', higher_is_better: true },
        ...(hellaswag ? [{ metric: 'acc_norm', aggregation: 'mean', higher_is_better: true }] : []),
        { metric: 'macro_f1', aggregation: 'macro_f1', higher_is_better: true },
      ],
      // The polyglot branch's task version (its results files say 0; specs/eval.md §2a).
      metadata: { version: 0 },
    };
    block.versions[key] = 0;
    block['n-shot'][key] = section.shots;
    block.higher_is_better[key] = { acc: true, macro_f1: true, f1: true, ...(hellaswag && { acc_norm: true }) };
    block['n-samples'][key] = { original: section.split_documents, effective: numbers.n };
  }
  return block;
}

const fixed = (value: number, digits: number): string => (Number.isFinite(value) ? value.toFixed(digits) : Number.isNaN(value) ? 'n/a' : String(value));
/** `value ± stderr`, each with `digits` decimals; the ± part is dropped when the stderr is not known. */
const plusMinus = (value: number, stderr: number, digits: number, scale = 1): string =>
  Number.isFinite(stderr) ? `${fixed(value * scale, digits)} ± ${fixed(stderr * scale, digits)}` : fixed(value * scale, digits);
/** `value ± stderr` in significant digits (for quantities near 0 such as KLD). */
const plusMinusSignificant = (value: number, stderr: number, scale = 1): string =>
  Number.isFinite(stderr) ? `${significant(value * scale)} ± ${significant(stderr * scale, 2)}` : significant(value * scale);
/** A perplexity cell: the number ± its uncertainty, or where the model's output stopped being finite. */
const pplCell = (numbers: PerplexityNumbers): string =>
  numbers.non_finite_positions > 0
    ? `non-finite (${numbers.non_finite_positions} positions, first at token ${numbers.first_non_finite_token})`
    : plusMinus(numbers.ppl, numbers.ppl_stderr, 3);
const signed = (value: number, digits: number): string => `${value > 0 ? '+' : ''}${fixed(value, digits)}`;
const interval = (ci: Interval, scale: number): string => `[${signed(ci.low * scale, 1)}, ${signed(ci.high * scale, 1)}]`;

/** A paired Δ with its interval, or the words for an interval that is [0, 0] only because nothing changed. */
const pairedDelta = (delta: number, ci: Interval, note: string | null): string =>
  note === NO_CHANGE_NOTE ? `${signed(100 * delta, 1)} (no document changed)` : `${signed(100 * delta, 1)} ${interval(ci, 100)}`;

function rows(report: VerifyReport): { perplexity: string[][]; kobest: string[][]; checks: string[][] } {
  return {
    perplexity: report.perplexity.map((section) => {
      const { comparison } = section;
      return [
        `${section.file} (${section.protocol}, ctx ${section.ctx})`,
        pplCell(section.baseline),
        pplCell(section.candidate),
        `${signed(comparison.delta_ppl_pct, 3)}${Number.isFinite(comparison.delta_ppl_pct_stderr) ? ` ± ${fixed(comparison.delta_ppl_pct_stderr, 3)}` : ''}%`,
        comparison.kld === null ? '–' : plusMinusSignificant(comparison.kld.mean, comparison.kld.mean_stderr),
        comparison.kld === null ? '–' : significant(comparison.kld.p99),
        `${plusMinus(comparison.same_top_p.value, comparison.same_top_p.stderr, 2, 100)}%`,
        fixed(section.candidate.bits_per_byte, 4),
      ];
    }),
    kobest: report.kobest.map((section) => [
      `${section.task} ${section.shots}-shot`,
      String(section.baseline.n),
      `${plusMinus(section.baseline.acc, section.baseline.acc_stderr, 1, 100)} → ${plusMinus(section.candidate.acc, section.candidate.acc_stderr, 1, 100)}`,
      pairedDelta(section.comparison.delta_acc, section.comparison.delta_acc_ci, section.comparison.ci_note),
      `${plusMinus(section.baseline.macro_f1, section.baseline.macro_f1_stderr, 1, 100)} → ${plusMinus(section.candidate.macro_f1, section.candidate.macro_f1_stderr, 1, 100)}`,
      pairedDelta(section.comparison.delta_macro_f1, section.comparison.delta_macro_f1_ci, section.comparison.ci_note),
      `${section.comparison.flips} (−${section.comparison.lost}/+${section.comparison.gained})`,
      significant(section.comparison.mcnemar_p),
    ]),
    checks: report.checks.map((check) => [check.passed ? 'pass' : 'FAIL', check.where, check.metric, describeCheckValue(check), describeCheckLimit(check)]),
  };
}

/**
 * llama-perplexity's statistics block for one text (its KL-divergence mode's "Perplexity statistics",
 * "KL divergence statistics" and "Token probability statistics"), as label/value pairs.
 */
function statisticsLines(section: PerplexitySection): [string, string][] {
  const { comparison: c, baseline, candidate } = section;
  const lines: [string, string][] = [
    ['Mean PPL(Q)', plusMinus(candidate.ppl, candidate.ppl_stderr, 6)],
    ['Mean PPL(base)', plusMinus(baseline.ppl, baseline.ppl_stderr, 6)],
    ['Cor(ln(PPL(Q)), ln(PPL(base)))', Number.isFinite(c.ln_ppl_correlation) ? `${fixed(100 * c.ln_ppl_correlation, 2)}%` : 'n/a'],
    ['Mean ln(PPL(Q)/PPL(base))', plusMinus(c.ln_ppl_ratio.value, c.ln_ppl_ratio.stderr, 6)],
    ['Mean PPL(Q)/PPL(base)', plusMinus(c.ppl_ratio.value, c.ppl_ratio.stderr, 6)],
    ['Mean PPL(Q)-PPL(base)', plusMinus(c.delta_ppl.value, c.delta_ppl.stderr, 6)],
  ];
  if (c.kld !== null) {
    lines.push(['Mean KLD', plusMinusSignificant(c.kld.mean, c.kld.mean_stderr)]);
    lines.push(['KLD max / 99.9% / 99% / 95% / 90%', [c.kld.max, c.kld.percentiles.p99_9, c.kld.percentiles.p99, c.kld.percentiles.p95, c.kld.percentiles.p90].map((v) => significant(v)).join(' / ')]);
    lines.push(['KLD median / 10% / 5% / 1% / min', [c.kld.median, c.kld.percentiles.p10, c.kld.percentiles.p5, c.kld.percentiles.p1, c.kld.min].map((v) => significant(v)).join(' / ')]);
  }
  if (c.delta_p !== null) {
    const percent = (value: number): string => `${significant(100 * value)}%`;
    lines.push(['Mean Δp', `${plusMinusSignificant(c.delta_p.mean, c.delta_p.mean_stderr, 100)}%`]);
    lines.push(['Δp max / 99.9% / 99% / 95% / 90%', [c.delta_p.max, c.delta_p.percentiles.p99_9, c.delta_p.percentiles.p99, c.delta_p.percentiles.p95, c.delta_p.percentiles.p90].map(percent).join(' / ')]);
    lines.push(['Δp median / 10% / 5% / 1% / min', [c.delta_p.percentiles.p50, c.delta_p.percentiles.p10, c.delta_p.percentiles.p5, c.delta_p.percentiles.p1, c.delta_p.min].map(percent).join(' / ')]);
    lines.push(['RMS Δp', `${plusMinusSignificant(c.delta_p.rms, c.delta_p.rms_stderr, 100)}%`]);
  }
  lines.push(['Same top p', `${plusMinus(c.same_top_p.value, c.same_top_p.stderr, 3, 100)}%`]);
  return lines;
}

const PPL_HEADER = ['text', 'PPL base', 'PPL cand', 'ΔPPL', 'mean KLD', 'p99 KLD', 'same top', 'bits/byte'];
const KOBEST_HEADER = ['task', 'n', 'acc % (± stderr)', 'Δacc (95% CI)', 'macro-F1 % (± stderr)', 'ΔF1 (95% CI)', 'flips', 'McNemar p'];
const CHECK_HEADER = ['', 'where', 'metric', 'value', 'limit'];

/** The verdict line: PASS with the number of checks, NOT GATED when no threshold was given, or FAIL. */
export function verdictLine(report: Pick<VerifyReport, 'checks' | 'gated' | 'verdict'>): string {
  const failed = report.checks.filter((check) => !check.passed).length;
  if (report.verdict === 'fail') return `FAIL: ${failed} of ${report.checks.length} checks failed`;
  if (!report.gated) {
    return `NOT GATED: no threshold was given, so nothing was checked; exit 0 means only that the run completed (set ${Object.keys(THRESHOLD_FLAGS).join(', ')}; --require-gates makes this an error)`;
  }
  return `PASS (${report.checks.length} checks)`;
}

export function renderText(report: VerifyReport, table: (header: readonly string[], rows: readonly (readonly string[])[]) => string): string {
  const r = rows(report);
  const lines = [
    `candidate  ${report.candidate.path} (${report.candidate.engine}${report.candidate.simulate ? `, simulated ${report.candidate.simulate}` : ''}, ${deviceNote(report.candidate)})`,
    `baseline   ${report.baseline.path} (${report.baseline.engine}${artifactNote(report.baseline)}, ${deviceNote(report.baseline)})`,
  ];
  if (r.perplexity.length > 0) {
    lines.push('', table(PPL_HEADER, r.perplexity));
    for (const section of report.perplexity) {
      const stats = statisticsLines(section);
      const width = Math.max(...stats.map(([label]) => label.length));
      lines.push('', `${section.file}: ${section.comparison.positions} positions (± is one standard error, as llama-perplexity prints it)`);
      for (const [label, value] of stats) lines.push(`  ${label.padEnd(width)} : ${value}`);
    }
  }
  if (r.kobest.length > 0) lines.push('', table(KOBEST_HEADER, r.kobest));
  if (r.checks.length > 0) lines.push('', table(CHECK_HEADER, r.checks));
  lines.push('', verdictLine(report));
  return lines.join('\n');
}

export function renderMarkdown(report: VerifyReport): string {
  const r = rows(report);
  const md = (header: readonly string[], body: readonly (readonly string[])[]): string =>
    [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...body.map((row) => `| ${row.join(' | ')} |`)].join('\n');
  const parts = [
    `## polyquant verify: ${report.verdict === 'fail' ? 'FAIL' : report.gated ? 'PASS' : 'NOT GATED'}`,
    '',
    `- candidate: \`${report.candidate.path}\` (${report.candidate.engine}${report.candidate.simulate ? `, simulated ${report.candidate.simulate}` : ''})`,
    `- baseline: \`${report.baseline.path}\` (${report.baseline.engine}${artifactNote(report.baseline)})`,
  ];
  if (r.perplexity.length > 0) {
    parts.push('', md(PPL_HEADER, r.perplexity));
    for (const section of report.perplexity) {
      parts.push('', `<details><summary>${section.file}: llama-perplexity statistics (${section.comparison.positions} positions, ± one standard error)</summary>`, '');
      parts.push(md(['statistic', 'value'], statisticsLines(section)), '', '</details>');
    }
  }
  if (r.kobest.length > 0) parts.push('', md(KOBEST_HEADER, r.kobest));
  if (r.checks.length > 0) parts.push('', md(CHECK_HEADER, r.checks));
  parts.push('', verdictLine(report));
  return `${parts.join('\n')}\n`;
}
