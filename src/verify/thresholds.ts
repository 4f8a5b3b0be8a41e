/**
 * Release gates: thresholds on the comparison of a candidate against its baseline, and the checks they
 * produce. A failed check makes `verify` exit 1 (bad input is 2).
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import type { KobestSection, PerplexitySection } from './report.js';

export interface Thresholds {
  /** Largest allowed perplexity increase, in percent (3 = 3 %). */
  readonly maxPplIncreasePct?: number;
  /** Largest allowed mean KL divergence, nats per token. */
  readonly maxKld?: number;
  /** Smallest allowed top-1 agreement, as a fraction (0.9 = 90 %). */
  readonly minTop1?: number;
  /** Largest allowed accuracy drop, as a fraction of documents (0.02 = 2 points). */
  readonly maxAccDrop?: number;
  /** Largest allowed macro-F1 drop (0.02 = 2 points). */
  readonly maxF1Drop?: number;
}

export interface Check {
  /** What was checked, e.g. `ppl valid.txt` or `kobest_copa 5-shot`. */
  readonly where: string;
  readonly metric: 'ppl_increase_pct' | 'mean_kld' | 'top1_agreement' | 'acc_drop' | 'macro_f1_drop' | 'non_finite_positions';
  readonly value: number;
  readonly limit: number;
  readonly passed: boolean;
}

/**
 * Parses a threshold flag. `percent: 'value'` flags (`--max-ppl-increase`) take "3%" or "3" meaning 3 %;
 * `fraction` flags take "0.02" or "2%" meaning 0.02. `max` bounds a gate whose metric cannot go past it
 * (agreement and accuracy are at most 1 = 100 %): a limit beyond it could never pass, or never fail.
 */
export function parseThreshold(flag: string, raw: string | number | undefined, unit: 'percent' | 'fraction', max?: number): number | undefined {
  if (raw === undefined) return undefined;
  const text = String(raw).trim();
  const match = /^(-?\d+(?:\.\d+)?(?:e-?\d+)?)(%?)$/i.exec(text);
  if (match === null) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${flag} ${JSON.stringify(text)} is not a number or percentage`, {
      hint: unit === 'percent' ? 'e.g. 3% or 3' : 'e.g. 0.02 or 2%',
    });
  }
  const number = Number(match[1]);
  const isPercent = match[2] === '%';
  const value = unit === 'percent' ? number : isPercent ? number / 100 : number;
  if (!(value >= 0) || !Number.isFinite(value)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${flag} must be a non-negative number, got ${JSON.stringify(text)}`);
  }
  if (max !== undefined && value > max) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${flag} ${text} is past ${max} (${max * 100}%), which the metric can never exceed`, {
      hint: 'give a fraction from 0 to 1 or a percentage from 0% to 100%',
    });
  }
  return value;
}

/** Collects checks; `atMost`/`atLeast` add one when the threshold is set. */
export class CheckList {
  readonly checks: Check[] = [];

  constructor(private readonly thresholds: Thresholds) {}

  atMost(where: string, metric: Check['metric'], value: number, limit: number | undefined): void {
    if (limit === undefined) return;
    // NaN never passes: a metric that could not be computed cannot clear a gate.
    this.checks.push({ where, metric, value, limit, passed: value <= limit });
  }

  atLeast(where: string, metric: Check['metric'], value: number, limit: number | undefined): void {
    if (limit === undefined) return;
    this.checks.push({ where, metric, value, limit, passed: value >= limit });
  }

  perplexity(where: string, deltaPplPct: number, meanKld: number | undefined, top1: number | undefined): void {
    this.atMost(where, 'ppl_increase_pct', deltaPplPct, this.thresholds.maxPplIncreasePct);
    if (meanKld !== undefined) this.atMost(where, 'mean_kld', meanKld, this.thresholds.maxKld);
    if (top1 !== undefined) this.atLeast(where, 'top1_agreement', top1, this.thresholds.minTop1);
  }

  /**
   * Output that is not finite fails whether or not any threshold is set: a NaN logit is a broken model,
   * never a quality level. Added only when there are such positions.
   */
  finite(where: string, nonFinitePositions: number): void {
    if (nonFinitePositions > 0) this.checks.push({ where, metric: 'non_finite_positions', value: nonFinitePositions, limit: 0, passed: false });
  }

  kobest(where: string, accDrop: number, f1Drop: number): void {
    this.atMost(where, 'acc_drop', accDrop, this.thresholds.maxAccDrop);
    this.atMost(where, 'macro_f1_drop', f1Drop, this.thresholds.maxF1Drop);
  }

  get passed(): boolean {
    return this.checks.every((check) => check.passed);
  }
}

/**
 * The checks a report's sections get under `thresholds`, in verify's order: per perplexity text its
 * non-finite checks (baseline, then candidate) and its ΔPPL / mean KLD / top-1 gates, then per KOBEST
 * section its accuracy and macro-F1 drops. A pure function of the numbers, so a sweep can gate stored
 * results again under other thresholds without scoring anything.
 */
export function gateSections(
  perplexity: readonly PerplexitySection[],
  kobest: readonly KobestSection[],
  thresholds: Thresholds,
): { checks: Check[]; verdict: 'pass' | 'fail' } {
  const list = new CheckList(thresholds);
  for (const section of perplexity) {
    list.finite(`ppl ${section.file} baseline`, section.baseline.non_finite_positions);
    list.finite(`ppl ${section.file} candidate`, section.candidate.non_finite_positions);
    list.perplexity(`ppl ${section.file}`, section.comparison.delta_ppl_pct, section.comparison.kld?.mean, section.comparison.top1_agreement);
  }
  for (const section of kobest) {
    list.kobest(`${section.task} ${section.shots}-shot`, -section.comparison.delta_acc, -section.comparison.delta_macro_f1);
  }
  return { checks: list.checks, verdict: list.passed ? 'pass' : 'fail' };
}
