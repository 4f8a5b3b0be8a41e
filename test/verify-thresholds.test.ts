import { describe, expect, it } from 'vitest';
import { PolyquantError } from '../src/errors.js';
import { applicableThresholds, type Check, CheckList, describeCheckLimit, describeCheckValue, parseThreshold, parseThresholdFlags, requireGates } from '../src/verify/thresholds.js';

describe('verification thresholds', () => {
  it('parses percentages, points and fractions, each flag in its documented unit', () => {
    expect(parseThreshold('--max-ppl-increase', '3%')).toBe(3);
    expect(parseThreshold('--max-ppl-increase', '3')).toBe(3);
    expect(parseThreshold('--max-ppl-increase', '0.05%')).toBe(0.05);
    expect(parseThreshold('--max-acc-drop', '2%')).toBeCloseTo(0.02, 12);
    expect(parseThreshold('--max-acc-drop', '2pp')).toBeCloseTo(0.02, 12);
    expect(parseThreshold('--max-acc-drop', '0.02')).toBe(0.02);
    expect(parseThreshold('--max-f1-drop', '1.5 pp')).toBeCloseTo(0.015, 12);
    expect(parseThreshold('--min-top1', '90%')).toBeCloseTo(0.9, 12);
    expect(parseThreshold('--min-top1', '0.9')).toBe(0.9);
    expect(parseThreshold('--min-top1', '1')).toBe(1);
    expect(parseThreshold('--max-kld', 0.05)).toBe(0.05);
    expect(parseThreshold('--max-kld', '1e-3')).toBe(0.001);
    expect(parseThreshold('--max-kld', undefined)).toBeUndefined();
    expect(parseThresholdFlags({ 'max-ppl-increase': '0.5%', 'max-acc-drop': '2pp', 'max-kld': undefined })).toEqual({ maxPplIncreasePct: 0.5, maxAccDrop: 0.02 });
  });

  it('refuses bare numbers whose two readings differ a hundredfold, naming both spellings', () => {
    expect(() => parseThreshold('--max-ppl-increase', '0.05')).toThrow(/ambiguous.*0\.05 %.*5 %/);
    expect(() => parseThreshold('--max-ppl-increase', '0.05')).toThrow(PolyquantError);
    expect(() => parseThreshold('--max-acc-drop', '1')).toThrow(/ambiguous/);
    expect(() => parseThreshold('--max-acc-drop', '2')).toThrow(/--max-acc-drop 2 is past 1 \(100%\)/);
    expect(() => parseThreshold('--min-top1', '90')).toThrow(/past 1/);
    const hint = (flag: string, value: string): string | undefined => {
      try {
        parseThreshold(flag, value);
      } catch (error) {
        return (error as PolyquantError).hint;
      }
      return undefined;
    };
    expect(hint('--max-acc-drop', '2')).toBe('a bare number is a fraction here: write 2pp (2 points) or 0.02');
    expect(hint('--min-top1', '90')).toBe('a bare number is a fraction here: write 90% or 0.9');
    // Units that mean nothing for the metric.
    expect(() => parseThreshold('--max-kld', '5%')).toThrow(/nats per token/);
    expect(() => parseThreshold('--max-ppl-increase', '2pp')).toThrow(/relative/);
  });

  it('refuses a threshold that is not a non-negative number, naming the flag', () => {
    expect(() => parseThreshold('--max-kld', 'lots')).toThrow(PolyquantError);
    expect(() => parseThreshold('--max-kld', 'lots')).toThrow(/--max-kld "lots"/);
    expect(() => parseThreshold('--min-top1', '-5%')).toThrow(/non-negative/);
    expect(() => parseThreshold('--max-acc-drop', '150%')).toThrow(/never exceed/);
  });

  it('prints values and limits in a notation that shows small limits', () => {
    const kld: Check = { where: 'ppl a.txt', metric: 'mean_kld', unit: 'nats', value: 0.000842, limit: 0.000001, passed: false };
    expect(describeCheckValue(kld)).toBe('8.42e-4');
    expect(describeCheckLimit(kld)).toBe('≤ 1e-6');
    const ppl: Check = { where: 'ppl a.txt', metric: 'ppl_increase_pct', unit: 'percent', value: 0.0842, limit: 0.05, passed: false };
    expect(`${describeCheckValue(ppl)} ${describeCheckLimit(ppl)}`).toBe('+0.0842 % ≤ 0.05 %');
    const acc: Check = { where: 'kobest_copa 0-shot', metric: 'acc_drop', unit: 'fraction', value: 0.012, limit: 0.02, passed: true };
    expect(`${describeCheckValue(acc)} ${describeCheckLimit(acc)}`).toBe('+1.2 pp ≤ 2 pp');
    const top1: Check = { where: 'ppl a.txt', metric: 'top1_agreement', unit: 'fraction', value: 0.9913, limit: 0.9, passed: true };
    expect(`${describeCheckValue(top1)} ${describeCheckLimit(top1)}`).toBe('99.13 % ≥ 90 %');
  });

  it('says which thresholds apply to what a run measures, for --require-gates', () => {
    expect(applicableThresholds({ maxKld: 0.01, maxAccDrop: 0.02 }, { ppl: true, kld: false, kobest: false })).toEqual({ applicable: [], inapplicable: ['--max-kld', '--max-acc-drop'] });
    expect(() => requireGates({}, { ppl: true, kld: true, kobest: false })).toThrow(/no threshold was given/);
    expect(() => requireGates({ maxAccDrop: 0.02 }, { ppl: true, kld: true, kobest: false })).toThrow(/needs --kobest/);
    expect(() => requireGates({ maxPplIncreasePct: 1 }, { ppl: true, kld: true, kobest: false })).not.toThrow();
  });

  it('adds a check only for the thresholds that are set, and fails on NaN', () => {
    const checks = new CheckList({ maxPplIncreasePct: 3, minTop1: 0.9 });
    checks.perplexity('ppl valid.txt', 2.5, 0.01, 0.95);
    expect(checks.checks.map((check) => [check.metric, check.passed])).toEqual([
      ['ppl_increase_pct', true],
      ['top1_agreement', true],
    ]);
    expect(checks.passed).toBe(true);
    expect(checks.gated).toBe(true);
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
