import { describe, expect, it } from 'vitest';
import { PolyquantError } from '../src/errors.js';
import { CheckList, parseThreshold } from '../src/verify/thresholds.js';

describe('verification thresholds', () => {
  it('parses percentages and fractions for each kind of flag', () => {
    expect(parseThreshold('--max-ppl-increase', '3%', 'percent')).toBe(3);
    expect(parseThreshold('--max-ppl-increase', '0.5', 'percent')).toBe(0.5);
    expect(parseThreshold('--max-acc-drop', '2%', 'fraction')).toBeCloseTo(0.02, 12);
    expect(parseThreshold('--max-kld', 0.05, 'fraction')).toBe(0.05);
    expect(parseThreshold('--max-kld', '1e-3', 'fraction')).toBe(0.001);
    expect(parseThreshold('--max-kld', undefined, 'fraction')).toBeUndefined();
  });

  it('refuses a threshold that is not a non-negative number, naming the flag', () => {
    expect(() => parseThreshold('--max-kld', 'lots', 'fraction')).toThrow(PolyquantError);
    expect(() => parseThreshold('--max-kld', 'lots', 'fraction')).toThrow(/--max-kld "lots"/);
    expect(() => parseThreshold('--min-top1', '-5%', 'fraction')).toThrow(/non-negative/);
  });

  it('adds a check only for the thresholds that are set, and fails on NaN', () => {
    const checks = new CheckList({ maxPplIncreasePct: 3, minTop1: 0.9 });
    checks.perplexity('ppl valid.txt', 2.5, 0.01, 0.95);
    expect(checks.checks.map((check) => [check.metric, check.passed])).toEqual([
      ['ppl_increase_pct', true],
      ['top1_agreement', true],
    ]);
    expect(checks.passed).toBe(true);
    checks.perplexity('ppl other.txt', Number.NaN, undefined, 0.5);
    expect(checks.passed).toBe(false);
    expect(checks.checks.filter((check) => !check.passed).map((check) => check.metric)).toEqual(['ppl_increase_pct', 'top1_agreement']);
  });

  it('checks accuracy and macro-F1 drops per task', () => {
    const checks = new CheckList({ maxAccDrop: 0.02, maxF1Drop: 0.02 });
    checks.kobest('kobest_copa 0-shot', 0.01, 0.03);
    expect(checks.checks.map((check) => check.passed)).toEqual([true, false]);
  });
});
