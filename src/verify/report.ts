/**
 * The verification report: a documented, versioned JSON shape (schema `polyquant.verify/1`, field names in
 * snake_case as lm-eval and llama.cpp report them), and its terminal and Markdown renderings.
 */
import type { KobestComparison } from './compare-kobest.js';
import type { DistributionComparison, Interval } from './stats.js';
import type { Check, Thresholds } from './thresholds.js';

export const VERIFY_SCHEMA = 'polyquant.verify/1';

export interface PerplexityNumbers {
  readonly ppl: number;
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

export interface PerplexitySection {
  readonly file: string;
  readonly protocol: string;
  readonly ctx: number;
  readonly stride?: number;
  readonly tokens: number;
  readonly baseline: PerplexityNumbers;
  readonly candidate: PerplexityNumbers;
  readonly comparison: {
    readonly delta_ppl_pct: number;
    readonly kld: { readonly mean: number; readonly median: number; readonly p99: number; readonly max: number } | null;
    readonly top1_agreement: number;
    readonly positions: number;
  };
}

export interface KobestNumbers {
  readonly n: number;
  readonly acc: number;
  readonly macro_f1: number;
  readonly acc_norm?: number;
}

export interface KobestSection {
  readonly task: string;
  readonly shots: number;
  readonly split: string;
  readonly baseline: KobestNumbers;
  readonly candidate: KobestNumbers;
  readonly comparison: Omit<KobestComparison, 'task' | 'shots' | 'n'>;
}

export interface ModelDescription {
  readonly path: string;
  readonly engine: string;
  readonly device: string;
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
}

/** `cpu`, or `gpu (cuda)` with the backend that ran it, or `cpu (software WebGPU adapter: …)`. */
function deviceNote(model: ModelDescription): string {
  if (model.gpu !== undefined) return `${model.device} (${model.gpu})`;
  return model.adapter === undefined ? model.device : `${model.device} (${model.adapter})`;
}

/** ` on f16 GGUF FILE` when the model ran from a converted file, else nothing. */
function artifactNote(model: ModelDescription): string {
  return model.artifact === undefined ? '' : ` on its ${model.artifact.type} GGUF ${model.artifact.file}${model.artifact.cached ? ', cached' : ''}`;
}

export interface VerifyReport {
  readonly schema: typeof VERIFY_SCHEMA;
  readonly created: string;
  readonly candidate: ModelDescription;
  readonly baseline: ModelDescription;
  readonly perplexity: readonly PerplexitySection[];
  readonly kobest: readonly KobestSection[];
  readonly thresholds: Thresholds;
  readonly checks: readonly Check[];
  readonly verdict: 'pass' | 'fail';
}

export function distributionSection(result: DistributionComparison, full: boolean): PerplexitySection['comparison']['kld'] {
  return full ? { mean: result.meanKld, median: result.medianKld, p99: result.p99Kld, max: result.maxKld } : null;
}

const fixed = (value: number, digits: number): string => (Number.isFinite(value) ? value.toFixed(digits) : String(value));
/** A perplexity cell: the number, or where the model's output stopped being finite. */
const pplCell = (numbers: PerplexityNumbers): string =>
  numbers.non_finite_positions > 0 ? `non-finite (${numbers.non_finite_positions} positions, first at token ${numbers.first_non_finite_token})` : fixed(numbers.ppl, 3);
const signed = (value: number, digits: number): string => `${value > 0 ? '+' : ''}${fixed(value, digits)}`;
const interval = (ci: Interval, scale: number): string => `[${signed(ci.low * scale, 1)}, ${signed(ci.high * scale, 1)}]`;

function rows(report: VerifyReport): { perplexity: string[][]; kobest: string[][]; checks: string[][] } {
  return {
    perplexity: report.perplexity.map((section) => [
      `${section.file} (${section.protocol}, ctx ${section.ctx})`,
      pplCell(section.baseline),
      pplCell(section.candidate),
      `${signed(section.comparison.delta_ppl_pct, 3)}%`,
      section.comparison.kld === null ? '–' : fixed(section.comparison.kld.mean, 6),
      section.comparison.kld === null ? '–' : fixed(section.comparison.kld.p99, 6),
      `${fixed(100 * section.comparison.top1_agreement, 2)}%`,
      fixed(section.candidate.bits_per_byte, 4),
    ]),
    kobest: report.kobest.map((section) => [
      `${section.task} ${section.shots}-shot`,
      String(section.baseline.n),
      `${fixed(100 * section.baseline.acc, 1)} → ${fixed(100 * section.candidate.acc, 1)}`,
      `${signed(100 * section.comparison.delta_acc, 1)} ${interval(section.comparison.delta_acc_ci, 100)}`,
      `${fixed(100 * section.baseline.macro_f1, 1)} → ${fixed(100 * section.candidate.macro_f1, 1)}`,
      `${signed(100 * section.comparison.delta_macro_f1, 1)} ${interval(section.comparison.delta_macro_f1_ci, 100)}`,
      `${section.comparison.flips} (−${section.comparison.lost}/+${section.comparison.gained})`,
      fixed(section.comparison.mcnemar_p, 3),
    ]),
    checks: report.checks.map((check) => [
      check.passed ? 'pass' : 'FAIL',
      check.where,
      check.metric,
      fixed(check.value, 6),
      `${check.metric === 'top1_agreement' ? '≥' : '≤'} ${fixed(check.limit, 6)}`,
    ]),
  };
}

const PPL_HEADER = ['text', 'PPL base', 'PPL cand', 'ΔPPL', 'mean KLD', 'p99 KLD', 'top-1', 'bits/byte'];
const KOBEST_HEADER = ['task', 'n', 'acc %', 'Δacc (95% CI)', 'macro-F1 %', 'ΔF1 (95% CI)', 'flips', 'McNemar p'];
const CHECK_HEADER = ['', 'where', 'metric', 'value', 'limit'];

export function renderText(report: VerifyReport, table: (header: readonly string[], rows: readonly (readonly string[])[]) => string): string {
  const r = rows(report);
  const lines = [
    `candidate  ${report.candidate.path} (${report.candidate.engine}${report.candidate.simulate ? `, simulated ${report.candidate.simulate}` : ''}, ${deviceNote(report.candidate)})`,
    `baseline   ${report.baseline.path} (${report.baseline.engine}${artifactNote(report.baseline)}, ${deviceNote(report.baseline)})`,
  ];
  if (r.perplexity.length > 0) lines.push('', table(PPL_HEADER, r.perplexity));
  if (r.kobest.length > 0) lines.push('', table(KOBEST_HEADER, r.kobest));
  if (r.checks.length > 0) lines.push('', table(CHECK_HEADER, r.checks));
  const failed = report.checks.filter((check) => !check.passed).length;
  lines.push(
    '',
    report.verdict === 'pass'
      ? `PASS${report.checks.length > 0 ? ` (${report.checks.length} checks)` : ' (no thresholds set)'}`
      : `FAIL: ${failed} of ${report.checks.length} checks failed`,
  );
  return lines.join('\n');
}

export function renderMarkdown(report: VerifyReport): string {
  const r = rows(report);
  const md = (header: readonly string[], body: readonly (readonly string[])[]): string =>
    [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...body.map((row) => `| ${row.join(' | ')} |`)].join('\n');
  const parts = [
    `## polyquant verify: ${report.verdict === 'pass' ? 'PASS' : 'FAIL'}`,
    '',
    `- candidate: \`${report.candidate.path}\` (${report.candidate.engine}${report.candidate.simulate ? `, simulated ${report.candidate.simulate}` : ''})`,
    `- baseline: \`${report.baseline.path}\` (${report.baseline.engine}${artifactNote(report.baseline)})`,
  ];
  if (r.perplexity.length > 0) parts.push('', md(PPL_HEADER, r.perplexity));
  if (r.kobest.length > 0) parts.push('', md(KOBEST_HEADER, r.kobest));
  if (r.checks.length > 0) parts.push('', md(CHECK_HEADER, r.checks));
  return `${parts.join('\n')}\n`;
}
