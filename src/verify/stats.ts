/**
 * Comparison statistics between a baseline and a candidate model scored on identical tokens or documents:
 * KL divergence and top-1 agreement per position (streamed: only per-position scalars are kept), paired
 * bootstrap confidence intervals, McNemar's test on flipped predictions.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { erf } from './engines/reference-math.js';

/**
 * KL(P_base ‖ P_cand) in nats at one position, from two rows of natural-log probabilities over the same
 * vocabulary: Σ p_b (log p_b − log p_c). This is the direction llama-perplexity's --kl-divergence reports.
 */
export function klDivergenceRow(baseLogProbs: Float32Array, candidateLogProbs: Float32Array, offset = 0, length = baseLogProbs.length - offset): number {
  let kld = 0;
  for (let i = offset; i < offset + length; i += 1) {
    const lb = baseLogProbs[i] as number;
    if (lb === Number.NEGATIVE_INFINITY) continue;
    kld += Math.exp(lb) * (lb - (candidateLogProbs[i] as number));
  }
  // Rounding can make an identical pair come out a hair below zero.
  return Math.max(0, kld);
}

/** Slack for rounding when a row's largest log-probability is checked against 0 and −log(vocab). */
const LOG_PROB_SLACK = 1e-3;

/**
 * Positions of one scored window whose output is not a probability distribution: a NaN or +∞
 * log-probability for the target token, or (with full rows) a NaN in the row or a largest
 * log-probability outside [−log V, 0] — which a distribution over V tokens cannot have, and which is how
 * non-finite logits look once an engine has turned NaN probabilities into a log floor. Returns the count
 * and the first such position (an index into the window's scored positions, −1 when there is none).
 */
export function nonFinitePositions(
  tokenLogProbs: ArrayLike<number>,
  argmax: ArrayLike<number>,
  full: Float32Array | undefined,
  vocab: number,
  klds?: ArrayLike<number>,
): { count: number; first: number } {
  const lowest = -Math.log(vocab) - LOG_PROB_SLACK;
  let count = 0;
  let first = -1;
  for (let position = 0; position < tokenLogProbs.length; position += 1) {
    const target = tokenLogProbs[position] as number;
    let bad = Number.isNaN(target) || target === Number.POSITIVE_INFINITY;
    if (!bad && full !== undefined) {
      const offset = position * vocab;
      const top = full[offset + (argmax[position] as number)] as number;
      bad = !(top <= LOG_PROB_SLACK && top >= lowest);
      // A finite KL divergence against the other model's row has already summed over every entry of this
      // one (all but those where the baseline's log-probability is −∞, which no engine here produces): a NaN
      // anywhere would have made it NaN, so the row need not be scanned again.
      const scanned = klds !== undefined && Number.isFinite(klds[position] as number);
      for (let i = offset; !bad && !scanned && i < offset + vocab; i += 1) if (Number.isNaN(full[i] as number)) bad = true;
    }
    if (bad) {
      count += 1;
      if (first < 0) first = position;
    }
  }
  return { count, first };
}

/** A CONFIG error unless both windows hold `positions` rows of `vocab` log-probabilities. */
export function checkWindowShapes(base: Float32Array, candidate: Float32Array, vocab: number, baseArgmax: Int32Array, candidateArgmax: Int32Array): void {
  const positions = baseArgmax.length;
  if (candidateArgmax.length !== positions || base.length !== positions * vocab || candidate.length !== positions * vocab) {
    throw new PolyquantError(
      ERROR_CODES.CONFIG,
      `baseline and candidate distributions differ in shape (${base.length} vs ${candidate.length} values for ${positions} positions × ${vocab})`,
      { hint: 'the two models must share a vocabulary size to be compared' },
    );
  }
}

/** Percentile with linear interpolation between order statistics (numpy's default "linear" method). */
export function percentile(sorted: ArrayLike<number>, fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  const position = fraction * (sorted.length - 1);
  const low = Math.floor(position);
  const high = Math.min(sorted.length - 1, low + 1);
  const weight = position - low;
  return (sorted[low] as number) * (1 - weight) + (sorted[high] as number) * weight;
}

export interface DistributionComparison {
  readonly positions: number;
  readonly meanKld: number;
  readonly medianKld: number;
  readonly p99Kld: number;
  readonly maxKld: number;
  /** Fraction of positions whose most probable next token is the same. */
  readonly top1Agreement: number;
}

/** Accumulates per-position KL divergence and top-1 agreement window by window. */
export class DistributionComparer {
  private klds: number[] = [];
  private agree = 0;

  /**
   * Adds one window: `positions` rows of `vocab` log-probabilities from each model (row-major), and the
   * argmax of each row.
   */
  addWindow(base: Float32Array, candidate: Float32Array, vocab: number, baseArgmax: Int32Array, candidateArgmax: Int32Array): void {
    checkWindowShapes(base, candidate, vocab, baseArgmax, candidateArgmax);
    this.addKlds(
      Float64Array.from(baseArgmax, (_, p) => klDivergenceRow(base, candidate, p * vocab, vocab)),
      baseArgmax,
      candidateArgmax,
    );
  }

  /** Adds one window whose per-position KL divergences were computed elsewhere (klDivergenceRow's formula, natively). */
  addKlds(klds: ArrayLike<number>, baseArgmax: Int32Array, candidateArgmax: Int32Array): void {
    for (let p = 0; p < baseArgmax.length; p += 1) {
      this.klds.push(klds[p] as number);
      if (baseArgmax[p] === candidateArgmax[p]) this.agree += 1;
    }
  }

  /** Adds top-1 agreement only (when full distributions are not available). */
  addArgmax(baseArgmax: Int32Array, candidateArgmax: Int32Array): void {
    for (let p = 0; p < baseArgmax.length; p += 1) if (baseArgmax[p] === candidateArgmax[p]) this.agree += 1;
  }

  result(positions: number): DistributionComparison {
    const sorted = Float64Array.from(this.klds).sort();
    let sum = 0;
    for (const value of sorted) sum += value;
    return {
      positions,
      meanKld: sorted.length > 0 ? sum / sorted.length : Number.NaN,
      medianKld: percentile(sorted, 0.5),
      p99Kld: percentile(sorted, 0.99),
      maxKld: sorted.length > 0 ? (sorted[sorted.length - 1] as number) : Number.NaN,
      top1Agreement: positions > 0 ? this.agree / positions : Number.NaN,
    };
  }
}

/** mulberry32: a small seeded generator so bootstrap intervals are reproducible run to run. */
export function seededUniform(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Interval {
  readonly low: number;
  readonly high: number;
  readonly level: number;
}

/**
 * Paired bootstrap: resample document indices with replacement and recompute `statistic` (typically
 * candidate metric − baseline metric on the same resample). Percentile interval at `level`.
 */
export function pairedBootstrap(
  count: number,
  statistic: (indices: Int32Array) => number,
  options: { iterations?: number; level?: number; seed?: number } = {},
): Interval {
  const iterations = options.iterations ?? 2000;
  const level = options.level ?? 0.95;
  if (count === 0) return { low: Number.NaN, high: Number.NaN, level };
  const random = seededUniform(options.seed ?? 1234);
  const values = new Float64Array(iterations);
  const indices = new Int32Array(count);
  for (let iteration = 0; iteration < iterations; iteration += 1) {
    for (let i = 0; i < count; i += 1) indices[i] = Math.floor(random() * count);
    values[iteration] = statistic(indices);
  }
  values.sort();
  return { low: percentile(values, (1 - level) / 2), high: percentile(values, 1 - (1 - level) / 2), level };
}

/**
 * Complementary error function for the χ² tail below, from the reference engine's fdlibm erf (absolute
 * error ~1e-16: p-values under that read as 0, which no threshold distinguishes).
 */
export function erfc(x: number): number {
  return 1 - erf(x);
}

export interface McNemarResult {
  /** Baseline right, candidate wrong. */
  readonly lost: number;
  /** Baseline wrong, candidate right. */
  readonly gained: number;
  /** Two-sided p-value: exact binomial for fewer than 25 discordant pairs, χ² with continuity correction otherwise. */
  readonly pValue: number;
}

export function mcnemar(baselineCorrect: ArrayLike<boolean>, candidateCorrect: ArrayLike<boolean>): McNemarResult {
  let lost = 0;
  let gained = 0;
  for (let i = 0; i < baselineCorrect.length; i += 1) {
    if (baselineCorrect[i] && !candidateCorrect[i]) lost += 1;
    else if (!baselineCorrect[i] && candidateCorrect[i]) gained += 1;
  }
  const discordant = lost + gained;
  if (discordant === 0) return { lost, gained, pValue: 1 };
  if (discordant < 25) {
    // Exact: two-sided binomial(n, 1/2) tail at min(lost, gained).
    const k = Math.min(lost, gained);
    let tail = 0;
    let term = 0.5 ** discordant; // C(n, 0) / 2^n
    for (let i = 0; i <= k; i += 1) {
      tail += term;
      term = (term * (discordant - i)) / (i + 1);
    }
    return { lost, gained, pValue: Math.min(1, 2 * tail) };
  }
  const chi2 = (Math.abs(lost - gained) - 1) ** 2 / discordant;
  // P(χ²₁ > x) = erfc(√(x/2)).
  return { lost, gained, pValue: erfc(Math.sqrt(chi2 / 2)) };
}
