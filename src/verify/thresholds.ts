/**
 * Release gates: thresholds on the comparison of a candidate against its baseline, and the checks they
 * produce. A failed check makes `verify` exit 1 (bad input is 2).
 *
 * One table (THRESHOLD_FLAGS) says what each flag measures, in which unit it is stored, and how its value
 * may be written; the CLI's parsing, help text and the check table's notation all come from it.
 *
 * Units, so that a number means one thing (issue #15: `--max-ppl-increase 0.05` used to mean 0.05 % while
 * `--max-acc-drop 0.05` meant 5 points):
 * - `N%` is always a percentage: of perplexity for `--max-ppl-increase` (a relative increase), of positions
 *   for `--min-top1`, and of documents — percentage points — for the accuracy and macro-F1 drops.
 * - `Npp` is percentage points, for the drops (and `--min-top1`, a share of positions): `2pp` = 0.02.
 * - A bare number is read in the flag's own unit, documented in its help: a percentage for
 *   `--max-ppl-increase` (`3` = 3 %), a fraction for `--min-top1` and the drops (`0.02` = 2 points), nats for
 *   `--max-kld`. Where the two readings differ a hundredfold and both are plausible, the bare number is
 *   refused with the two spellings to choose from: `--max-ppl-increase` below 1 (`0.05`: 0.05 % or 5 %?),
 *   a drop of exactly 1 (1 point or 100?), and any fraction flag past 1 (`2`: 2 points, or 200 %, which the
 *   metric cannot reach). A gate that silently loosens a hundredfold is worse than a second of typing.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import type { KobestSection, PerplexitySection } from './report.js';
import { significant } from './stats.js';

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

/** How a threshold's number is stored: `percent` (3 = 3 %), `fraction` (0.02 = 2 % or 2 points), `nats`. */
export type ThresholdUnit = 'percent' | 'fraction' | 'nats';

export interface ThresholdFlag {
  readonly key: keyof Thresholds;
  readonly metric: Check['metric'];
  readonly unit: ThresholdUnit;
  /** `points`: a difference of two shares (2 points), written `2pp` or `2%`; `share`: a share itself (90 %). */
  readonly kind: 'relative' | 'points' | 'share' | 'nats';
  /** The largest value the metric can take (agreement and accuracy are at most 1 = 100 %). */
  readonly max?: number;
  /** What it bounds, for the help text. */
  readonly what: string;
  readonly example: string;
}

/** Every threshold flag, in the order checks are made. */
export const THRESHOLD_FLAGS: Readonly<Record<string, ThresholdFlag>> = {
  '--max-ppl-increase': {
    key: 'maxPplIncreasePct',
    metric: 'ppl_increase_pct',
    unit: 'percent',
    kind: 'relative',
    what: 'perplexity increase, relative to the baseline',
    example: '3% (a bare number is a percentage: 3 = 3 %; below 1 write the % sign, e.g. 0.5%)',
  },
  '--max-kld': { key: 'maxKld', metric: 'mean_kld', unit: 'nats', kind: 'nats', what: 'mean KL divergence, nats per token', example: '0.01 or 1e-3' },
  '--min-top1': {
    key: 'minTop1',
    metric: 'top1_agreement',
    unit: 'fraction',
    kind: 'share',
    max: 1,
    what: 'top-1 agreement (share of positions whose most probable token is the same)',
    example: '90% (a bare number is a fraction: 0.9 = 90 %)',
  },
  '--max-acc-drop': {
    key: 'maxAccDrop',
    metric: 'acc_drop',
    unit: 'fraction',
    kind: 'points',
    max: 1,
    what: 'KOBEST accuracy drop, in points',
    example: '2pp or 2% (2 points; a bare number is a fraction: 0.02 = 2 points)',
  },
  '--max-f1-drop': {
    key: 'maxF1Drop',
    metric: 'macro_f1_drop',
    unit: 'fraction',
    kind: 'points',
    max: 1,
    what: 'KOBEST macro-F1 drop, in points',
    example: '2pp or 2% (2 points; a bare number is a fraction: 0.02 = 2 points)',
  },
};

export interface Check {
  /** What was checked, e.g. `ppl valid.txt` or `kobest_copa 5-shot`. */
  readonly where: string;
  readonly metric: 'ppl_increase_pct' | 'mean_kld' | 'top1_agreement' | 'acc_drop' | 'macro_f1_drop' | 'non_finite_positions';
  /** How `value` and `limit` are stored: percent (3 = 3 %), fraction (0.02 = 2 % / 2 points), nats, positions. */
  readonly unit?: ThresholdUnit | 'positions';
  readonly value: number;
  readonly limit: number;
  readonly passed: boolean;
}

/** The help text of a threshold flag (verify and sweep): what it bounds and how to write it. */
export function thresholdDescription(flag: string, subject: string): string {
  const entry = THRESHOLD_FLAGS[flag];
  if (entry === undefined) throw new Error(`unknown threshold flag ${flag}`);
  return `${subject} ${entry.metric === 'top1_agreement' ? 'below' : 'above'} this ${entry.what}, e.g. ${entry.example}`;
}

function usage(message: string, hint: string): PolyquantError {
  return new PolyquantError(ERROR_CODES.USAGE, message, { hint });
}

/**
 * Parses a threshold flag's value (THRESHOLD_FLAGS): `N%`, `Npp` where the flag allows it, or a bare number
 * in the flag's own unit; refuses ambiguous bare numbers (module header), negatives, and limits past what
 * the metric can reach. Returns the value in the flag's stored unit, or undefined when the flag is absent.
 */
export function parseThreshold(flag: string, raw: string | number | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const entry = THRESHOLD_FLAGS[flag];
  if (entry === undefined) throw new Error(`unknown threshold flag ${flag}`);
  if (Array.isArray(raw)) throw usage(`${flag} is given ${raw.length} times`, 'give it once');
  const text = String(raw).trim();
  const match = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*(%|pp)?$/i.exec(text);
  if (match === null) throw usage(`${flag} ${JSON.stringify(text)} is not a number`, `e.g. ${flag} ${entry.example}`);
  const number = Number(match[1]);
  const suffix = match[2]?.toLowerCase();
  if (!Number.isFinite(number) || number < 0) {
    throw usage(`${flag} must be a non-negative number, got ${JSON.stringify(text)}`, `e.g. ${flag} ${entry.example}`);
  }
  let value: number;
  if (entry.kind === 'nats') {
    if (suffix !== undefined) throw usage(`${flag} ${text}: a KL divergence is in nats per token, not a percentage`, `e.g. ${flag} ${entry.example}`);
    value = number;
  } else if (entry.kind === 'relative') {
    if (suffix === 'pp') throw usage(`${flag} ${text}: a perplexity increase is relative, not in points`, `write ${number}% for ${number} %`);
    if (suffix === undefined && number > 0 && number < 1) {
      throw usage(
        `${flag} ${text} is ambiguous: a bare number is a percentage here (${text} %), but it reads like a fraction (${significant(number * 100)} %)`,
        `write ${text}% or ${significant(number * 100)}%`,
      );
    }
    value = number;
  } else {
    // A share or a difference of shares, stored as a fraction: % and pp both count hundredths.
    const max = entry.max ?? 1;
    const spellings = entry.kind === 'points' ? `${text}pp (${text} points) or ${significant(number / 100)}` : `${text}% or ${significant(number / 100)}`;
    if (suffix === undefined && number > max) {
      throw usage(`${flag} ${text} is past ${max} (${max * 100}%), which the metric can never exceed`, `a bare number is a fraction here: write ${spellings}`);
    }
    if (suffix === undefined && number === 1 && entry.kind === 'points') {
      throw usage(`${flag} 1 is ambiguous: a bare number is a fraction here (1 = 100 points), but it reads like 1 point`, 'write 1pp (1 point) or 100pp');
    }
    value = suffix === undefined ? number : number / 100;
  }
  if (entry.max !== undefined && value > entry.max) {
    throw usage(`${flag} ${text} is past ${entry.max} (${entry.max * 100}%), which the metric can never exceed`, 'give a value from 0 to 100% (0 to 1 as a fraction)');
  }
  return value;
}

/** Every threshold flag given in `args` (keys without the leading dashes, as yargs names them), parsed. */
export function parseThresholdFlags(args: Readonly<Record<string, unknown>>): Thresholds {
  const thresholds: { -readonly [K in keyof Thresholds]: number } = {};
  for (const [flag, entry] of Object.entries(THRESHOLD_FLAGS)) {
    const value = parseThreshold(flag, args[flag.slice(2)] as string | number | undefined);
    if (value !== undefined) thresholds[entry.key] = value;
  }
  return thresholds;
}

/** The unit each metric's value and limit are stored in. */
const METRIC_UNITS: Readonly<Record<Check['metric'], NonNullable<Check['unit']>>> = {
  ppl_increase_pct: 'percent',
  mean_kld: 'nats',
  top1_agreement: 'fraction',
  acc_drop: 'fraction',
  macro_f1_drop: 'fraction',
  non_finite_positions: 'positions',
};

/** A check's number in the notation of its metric, with significant digits so that small limits stay visible. */
function describe(check: Check, value: number, sign: boolean): string {
  const plus = sign && value > 0 ? '+' : '';
  switch (check.metric) {
    case 'ppl_increase_pct':
      return `${plus}${significant(value, 4)} %`;
    case 'top1_agreement':
      return `${significant(100 * value, 4)} %`;
    case 'acc_drop':
    case 'macro_f1_drop':
      return `${plus}${significant(100 * value, 4)} pp`;
    case 'mean_kld':
      return significant(value, 4);
    case 'non_finite_positions':
      return String(value);
  }
}

/** The measured side of a check, e.g. `+0.0842 %`, `8.42e-4`, `1.2 pp`. */
export function describeCheckValue(check: Check): string {
  return describe(check, check.value, true);
}

/** The limit side of a check, e.g. `≤ 0.05 %`, `≥ 90 %`, `= 0`. */
export function describeCheckLimit(check: Check): string {
  if (check.metric === 'non_finite_positions') return '= 0';
  return `${check.metric === 'top1_agreement' ? '≥' : '≤'} ${describe(check, check.limit, false)}`;
}

/** Collects checks; `atMost`/`atLeast` add one when the threshold is set. */
export class CheckList {
  readonly checks: Check[] = [];

  constructor(private readonly thresholds: Thresholds) {}

  atMost(where: string, metric: Check['metric'], value: number, limit: number | undefined): void {
    if (limit === undefined) return;
    // NaN never passes: a metric that could not be computed cannot clear a gate.
    this.checks.push({ where, metric, unit: METRIC_UNITS[metric], value, limit, passed: value <= limit });
  }

  atLeast(where: string, metric: Check['metric'], value: number, limit: number | undefined): void {
    if (limit === undefined) return;
    this.checks.push({ where, metric, unit: METRIC_UNITS[metric], value, limit, passed: value >= limit });
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
    if (nonFinitePositions > 0) {
      this.checks.push({ where, metric: 'non_finite_positions', unit: 'positions', value: nonFinitePositions, limit: 0, passed: false });
    }
  }

  kobest(where: string, accDrop: number, f1Drop: number): void {
    this.atMost(where, 'acc_drop', accDrop, this.thresholds.maxAccDrop);
    this.atMost(where, 'macro_f1_drop', f1Drop, this.thresholds.maxF1Drop);
  }

  get passed(): boolean {
    return this.checks.every((check) => check.passed);
  }

  /** Whether any threshold was checked (the always-on non-finite check does not count). */
  get gated(): boolean {
    return this.checks.some((check) => check.metric !== 'non_finite_positions');
  }
}

/**
 * The checks a report's sections get under `thresholds`, in verify's order: per perplexity text its
 * non-finite checks (baseline, then candidate) and its ΔPPL / mean KLD / top-1 gates, then per KOBEST
 * section its accuracy and macro-F1 drops. A pure function of the numbers, so a sweep can gate stored
 * results again under other thresholds without scoring anything. `gated` is false when no threshold
 * applied to anything measured: a `pass` then only says that the run completed.
 */
export function gateSections(
  perplexity: readonly PerplexitySection[],
  kobest: readonly KobestSection[],
  thresholds: Thresholds,
): { checks: Check[]; verdict: 'pass' | 'fail'; gated: boolean } {
  const list = new CheckList(thresholds);
  for (const section of perplexity) {
    list.finite(`ppl ${section.file} baseline`, section.baseline.non_finite_positions);
    list.finite(`ppl ${section.file} candidate`, section.candidate.non_finite_positions);
    list.perplexity(`ppl ${section.file}`, section.comparison.delta_ppl_pct, section.comparison.kld?.mean, section.comparison.top1_agreement);
  }
  for (const section of kobest) {
    list.kobest(`${section.task} ${section.shots}-shot`, -section.comparison.delta_acc, -section.comparison.delta_macro_f1);
  }
  return { checks: list.checks, verdict: list.passed ? 'pass' : 'fail', gated: list.gated };
}

/**
 * The thresholds among `thresholds` that can apply to a run measuring perplexity (`ppl`, with KL divergence
 * when `kld`) and/or KOBEST (`kobest`): what `--require-gates` needs at least one of, checked before any
 * model loads. Returns the flags that apply and those given that cannot apply.
 */
export function applicableThresholds(thresholds: Thresholds, measured: { ppl: boolean; kld: boolean; kobest: boolean }): { applicable: string[]; inapplicable: string[] } {
  const applicable: string[] = [];
  const inapplicable: string[] = [];
  for (const [flag, entry] of Object.entries(THRESHOLD_FLAGS)) {
    if (thresholds[entry.key] === undefined) continue;
    const applies = entry.metric === 'mean_kld' ? measured.ppl && measured.kld : entry.kind === 'points' ? measured.kobest : measured.ppl;
    (applies ? applicable : inapplicable).push(flag);
  }
  return { applicable, inapplicable };
}

/**
 * `--require-gates`: a USAGE error (exit 2) unless at least one threshold applies to what the run measures,
 * so that a CI job cannot pass by gating nothing.
 */
export function requireGates(thresholds: Thresholds, measured: { ppl: boolean; kld: boolean; kobest: boolean }): void {
  const { applicable, inapplicable } = applicableThresholds(thresholds, measured);
  if (applicable.length > 0) return;
  throw new PolyquantError(
    ERROR_CODES.USAGE,
    inapplicable.length > 0
      ? `--require-gates: none of the thresholds given applies to what this run measures (${inapplicable.join(', ')} ${inapplicable.length === 1 ? 'needs' : 'need'} ${inapplicable.some((flag) => THRESHOLD_FLAGS[flag]?.kind === 'points') ? '--kobest' : '--ppl'}${inapplicable.includes('--max-kld') ? ' with KL divergence (not --no-kld)' : ''})`
      : '--require-gates: no threshold was given, so nothing would be gated',
    { hint: `give at least one of ${Object.keys(THRESHOLD_FLAGS).join(', ')} that applies to --ppl or --kobest` },
  );
}
