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

/** A mean and its standard error, as llama-perplexity prints `value ± stderr`. */
export interface Estimate {
  readonly value: number;
  readonly stderr: number;
}

/** The percentiles llama-perplexity prints for KLD and Δp (tools/perplexity/perplexity.cpp `kl_divergence`). */
export const PERCENTILES = [
  ['p99_9', 0.999],
  ['p99', 0.99],
  ['p95', 0.95],
  ['p90', 0.9],
  ['p50', 0.5],
  ['p10', 0.1],
  ['p5', 0.05],
  ['p1', 0.01],
] as const;
export type PercentileName = (typeof PERCENTILES)[number][0];

/** A per-position quantity over every scored position: mean ± stderr, percentiles, extremes. */
export interface PositionStatistics {
  readonly mean: number;
  readonly meanStderr: number;
  readonly percentiles: Readonly<Record<PercentileName, number>>;
  readonly max: number;
  readonly min: number;
}

/**
 * Everything verify reports about one text's positions, computed the way llama-perplexity's KL-divergence
 * mode does (tools/perplexity/perplexity.cpp `kl_divergence`): per-position NLL of both models, KL
 * divergence, Δp (the candidate's probability of the actual next token minus the baseline's), and whether
 * the most probable token is the same. Each uncertainty is the standard error of a mean over positions,
 * sqrt(Σ(x − x̄)² / (n(n − 1))) (llama.cpp's `mean_and_uncertainty`, computed in two passes rather than from
 * Σx and Σx², which cancel badly when the spread is small); the PPL ratio's and difference's uncertainties
 * include the covariance of the two models' NLL exactly as llama.cpp's `covariance` term does, here as the
 * standard error of the paired per-position differences (algebraically the same, and exactly 0 for a model
 * compared with itself). Below two positions a standard error is NaN (null in JSON), never a made-up 0.
 */
export interface DistributionComparison {
  readonly positions: number;
  readonly meanKld: number;
  readonly medianKld: number;
  readonly p99Kld: number;
  readonly maxKld: number;
  /** Fraction of positions whose most probable next token is the same. */
  readonly top1Agreement: number;
  /** KL(base ‖ candidate) per position; null without full distributions (`--no-kld`). */
  readonly kld: PositionStatistics | null;
  /** p_candidate(token) − p_baseline(token) per position, plus its RMS ± stderr; null without target log-probabilities. */
  readonly deltaP: (PositionStatistics & { readonly rms: number; readonly rmsStderr: number }) | null;
  /** llama-perplexity's "Same top p": top-1 agreement ± sqrt(p(1 − p)/(n − 1)). */
  readonly sameTopP: Estimate;
  /** Mean NLL (ln PPL) of each model ± stderr, and their correlation across positions; null without targets. */
  readonly nll: { readonly baseline: Estimate; readonly candidate: Estimate; readonly correlation: number } | null;
  /** Mean ln(PPL(candidate)/PPL(baseline)) ± stderr (the mean of the paired NLL differences). */
  readonly lnPplRatio: Estimate | null;
  /** Mean PPL(candidate) − PPL(baseline) ± stderr (llama-perplexity's "Mean PPL(Q)-PPL(base)"). */
  readonly pplDifference: Estimate | null;
}

/** Mean and its standard error sqrt(Σ(x − x̄)² / (n(n − 1))), two-pass; the stderr is NaN below two values. */
export function meanAndStderr(values: ArrayLike<number>): Estimate {
  const n = values.length;
  if (n === 0) return { value: Number.NaN, stderr: Number.NaN };
  let sum = 0;
  for (let i = 0; i < n; i += 1) sum += values[i] as number;
  const mean = sum / n;
  if (n < 2) return { value: mean, stderr: Number.NaN };
  let squares = 0;
  for (let i = 0; i < n; i += 1) squares += ((values[i] as number) - mean) ** 2;
  return { value: mean, stderr: Math.sqrt(squares / (n * (n - 1))) };
}

/** Sample covariance of two paired series divided by n: the covariance of their means (llama.cpp's `covariance`). */
function covarianceOfMeans(a: ArrayLike<number>, b: ArrayLike<number>, meanA: number, meanB: number): number {
  const n = a.length;
  if (n < 2) return Number.NaN;
  let sum = 0;
  for (let i = 0; i < n; i += 1) sum += ((a[i] as number) - meanA) * ((b[i] as number) - meanB);
  return sum / (n * (n - 1));
}

/** Mean ± stderr, llama-perplexity's percentiles (linear interpolation), maximum and minimum. */
export function positionStatistics(values: Float64Array): PositionStatistics {
  const { value: mean, stderr } = meanAndStderr(values);
  const sorted = Float64Array.from(values).sort();
  const percentiles = Object.fromEntries(PERCENTILES.map(([name, fraction]) => [name, percentile(sorted, fraction)])) as Record<PercentileName, number>;
  const empty = sorted.length === 0;
  return { mean, meanStderr: stderr, percentiles, max: empty ? Number.NaN : (sorted[sorted.length - 1] as number), min: empty ? Number.NaN : (sorted[0] as number) };
}

/** A growable array of doubles (per-position values of a whole text: 8 bytes a position). */
class DoubleList {
  private data = new Float64Array(1024);
  length = 0;

  push(value: number): void {
    if (this.length === this.data.length) {
      const grown = new Float64Array(this.data.length * 2);
      grown.set(this.data);
      this.data = grown;
    }
    this.data[this.length] = value;
    this.length += 1;
  }

  values(): Float64Array {
    return this.data.subarray(0, this.length);
  }
}

/**
 * Accumulates per-position KL divergence, top-1 agreement and both models' target log-probabilities
 * window by window (8 bytes a position for each: a 300k-token text keeps ~7 MB).
 */
export class DistributionComparer {
  private klds = new DoubleList();
  private baseNll = new DoubleList();
  private candidateNll = new DoubleList();
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

  /**
   * Adds one window's target log-probabilities (log p of the actual next token at each scored position)
   * from each model: the per-position NLL behind PPL ±, the PPL ratio ± and Δp. Every engine returns them.
   */
  addTargets(baseLogProbs: ArrayLike<number>, candidateLogProbs: ArrayLike<number>): void {
    if (baseLogProbs.length !== candidateLogProbs.length) {
      throw new PolyquantError(ERROR_CODES.CONFIG, `baseline and candidate scored ${baseLogProbs.length} and ${candidateLogProbs.length} positions of one window`);
    }
    for (let p = 0; p < baseLogProbs.length; p += 1) {
      this.baseNll.push(-(baseLogProbs[p] as number));
      this.candidateNll.push(-(candidateLogProbs[p] as number));
    }
  }

  result(positions: number): DistributionComparison {
    const kld = this.klds.length > 0 ? positionStatistics(this.klds.values()) : null;
    const top1 = positions > 0 ? this.agree / positions : Number.NaN;
    const targets = this.targetStatistics();
    return {
      positions,
      meanKld: kld?.mean ?? Number.NaN,
      medianKld: kld?.percentiles.p50 ?? Number.NaN,
      p99Kld: kld?.percentiles.p99 ?? Number.NaN,
      maxKld: kld?.max ?? Number.NaN,
      top1Agreement: top1,
      kld,
      sameTopP: { value: top1, stderr: positions > 1 ? Math.sqrt((top1 * (1 - top1)) / (positions - 1)) : Number.NaN },
      ...targets,
    };
  }

  private targetStatistics(): Pick<DistributionComparison, 'deltaP' | 'nll' | 'lnPplRatio' | 'pplDifference'> {
    const n = this.baseNll.length;
    if (n === 0) return { deltaP: null, nll: null, lnPplRatio: null, pplDifference: null };
    const base = this.baseNll.values();
    const candidate = this.candidateNll.values();
    const baseline = meanAndStderr(base);
    const cand = meanAndStderr(candidate);
    const covariance = covarianceOfMeans(base, candidate, baseline.value, cand.value);
    const pplBase = Math.exp(baseline.value);
    const pplCandidate = Math.exp(cand.value);
    const differences = new Float64Array(n);
    const weighted = new Float64Array(n);
    const deltaP = new Float64Array(n);
    const deltaP2 = new Float64Array(n);
    for (let i = 0; i < n; i += 1) {
      const b = base[i] as number;
      const c = candidate[i] as number;
      differences[i] = c - b;
      // The delta method for PPL(Q) − PPL(base): d(e^x) = e^x dx on each side, paired per position.
      weighted[i] = pplCandidate * c - pplBase * b;
      const dp = Math.exp(-c) - Math.exp(-b);
      deltaP[i] = dp;
      deltaP2[i] = dp * dp;
    }
    const ratio = meanAndStderr(differences);
    const difference = meanAndStderr(weighted);
    const meanSquare = meanAndStderr(deltaP2);
    const rms = Math.sqrt(meanSquare.value);
    return {
      nll: { baseline, candidate: cand, correlation: covariance / (baseline.stderr * cand.stderr) },
      lnPplRatio: ratio,
      pplDifference: { value: pplCandidate - pplBase, stderr: difference.stderr },
      // llama.cpp: RMS ± 0.5/RMS × stderr(Δp²); an RMS of exactly 0 (no change anywhere) has stderr 0.
      deltaP: { ...positionStatistics(deltaP), rms, rmsStderr: rms === 0 ? meanSquare.stderr : (0.5 / rms) * meanSquare.stderr },
    };
  }
}

/**
 * The comparison of a text where either model's output was not finite: nothing compares, so every
 * statistic is NaN (null in JSON) and every gate on it fails.
 */
export function invalidComparison(result: DistributionComparison): DistributionComparison {
  const nan = Number.NaN;
  const invalid = (): PositionStatistics => ({
    mean: nan,
    meanStderr: nan,
    percentiles: Object.fromEntries(PERCENTILES.map(([name]) => [name, nan])) as Record<PercentileName, number>,
    max: nan,
    min: nan,
  });
  const estimate = { value: nan, stderr: nan };
  return {
    positions: result.positions,
    meanKld: nan,
    medianKld: nan,
    p99Kld: nan,
    maxKld: nan,
    top1Agreement: nan,
    kld: result.kld === null ? null : invalid(),
    deltaP: result.deltaP === null ? null : { ...invalid(), rms: nan, rmsStderr: nan },
    sameTopP: estimate,
    nll: result.nll === null ? null : { baseline: estimate, candidate: estimate, correlation: nan },
    lnPplRatio: result.lnPplRatio === null ? null : estimate,
    pplDifference: result.pplDifference === null ? null : estimate,
  };
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

/**
 * A number with `digits` significant digits, in plain notation from 0.001 up to a million and in scientific
 * notation outside, trailing zeros dropped: 0.000842 → "8.42e-4", 0.05 → "0.05", 12.3456 → "12.3".
 * Fixed decimals would print a small limit as 0.000000 (issue #15); this never hides a non-zero value.
 */
export function significant(value: number, digits = 3): string {
  if (!Number.isFinite(value)) return Number.isNaN(value) ? 'n/a' : String(value);
  if (value === 0) return '0';
  const magnitude = Math.abs(value);
  if (magnitude >= 1e-3 && magnitude < 1e6) {
    const text = value.toPrecision(digits);
    if (!text.includes('e')) return text.includes('.') ? text.replace(/\.?0+$/, '') : text;
    return String(Number(text));
  }
  const [mantissa = '', exponent = ''] = value.toExponential(digits - 1).split('e');
  const trimmed = mantissa.includes('.') ? mantissa.replace(/\.?0+$/, '') : mantissa;
  return `${trimmed}e${exponent.replace('+', '')}`;
}
