import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PolyquantError } from '../src/errors.js';
import { planKobest } from '../src/verify/kobest/requests.js';
import { PythonRandom } from '../src/verify/python-random.js';
import { HAS_SHARED, sharedPath } from './helpers/shared.js';

// Expected values below were printed by CPython 3.11.7 (the version the golden file names), e.g.
// `r = random.Random(7); r.sample(range(10), 10)`.

describe('PythonRandom against known CPython outputs', () => {
  it('gives random.Random(42).random() = 0.6394267984578837 and the next seven values', () => {
    const random = new PythonRandom(42);
    expect(Array.from({ length: 8 }, () => random.random())).toEqual([
      0.6394267984578837, 0.025010755222666936, 0.27502931836911926, 0.22321073814882275, 0.7364712141640124,
      0.6766994874229113, 0.8921795677048454, 0.08693883262941615,
    ]);
  });

  it('seeds with init_by_array over the 32-bit words of |seed|, so negative, zero and wide seeds match', () => {
    expect(new PythonRandom(-42).random()).toBe(0.6394267984578837);
    const words = (seed: number | bigint): bigint[] => {
      const random = new PythonRandom(seed);
      return [random.getrandbits(32), random.getrandbits(32), random.getrandbits(32)];
    };
    expect(words(0)).toEqual([3626764237n, 1654615998n, 3255389356n]);
    expect(words(2 ** 32 + 1)).toEqual([991850117n, 2151679444n, 2200792185n]);
    expect(words(2n ** 100n + 7n)).toEqual([1786885132n, 353954449n, 1403444918n]);
  });

  it('builds getrandbits(k) from words least significant first for every width', () => {
    const random = new PythonRandom(42);
    expect(random.getrandbits(1)).toBe(1n);
    expect(random.getrandbits(7)).toBe(14n);
    expect(random.getrandbits(33)).toBe(4402387665n);
    expect(random.getrandbits(64)).toBe(4517457392071889495n);
    expect(random.getrandbits(100)).toBe(137577423665220539048064734942n);
    expect(random.getrandbits(0)).toBe(0n);
    expect(random.getrandbits(53)).toBe(6671341247540589n);
  });

  it('draws randrange, randint and choice through _randbelow, including bounds above 2**32', () => {
    const dice = new PythonRandom(123);
    expect(Array.from({ length: 10 }, () => dice.randint(1, 6))).toEqual([1, 3, 1, 4, 3, 1, 1, 4, 5, 5]);
    expect(dice.choice([...'abcdefg'])).toBe('c');
    expect(dice.randrange(10, 100, 7)).toBe(45);
    expect(dice.randrange(100, 10, -7)).toBe(100);
    const wide = new PythonRandom(99);
    expect([wide.randrange(2 ** 40 + 3), wide.randrange(2 ** 40 + 3), wide.randrange(2 ** 40 + 3)]).toEqual([
      834958728041, 503279123773, 293124780526,
    ]);
    expect([wide.randrange(2 ** 53), wide.randrange(2 ** 53)]).toEqual([1559660507649016, 1618345990527322]);
  });

  it('shuffles in place like random.shuffle', () => {
    const items = Array.from({ length: 20 }, (_, index) => index);
    new PythonRandom(7).shuffle(items);
    expect(items).toEqual([17, 15, 11, 18, 7, 6, 19, 3, 14, 0, 9, 5, 16, 8, 13, 2, 1, 12, 4, 10]);
  });

  it('samples with the pool algorithm up to setsize and the selected-set algorithm above it', () => {
    const range = (n: number): number[] => Array.from({ length: n }, (_, index) => index);
    const sample = (n: number, k: number): number[] => new PythonRandom(11).sample(range(n), k);
    // k ≤ 5: setsize 21. n = 21 takes the pool, n = 22 the set; the draws diverge at the third pick.
    expect(sample(21, 5)).toEqual([14, 17, 20, 18, 16]);
    expect(sample(22, 5)).toEqual([14, 17, 16, 18, 6]);
    // k = 6: setsize 21 + 4**ceil(log(18, 4)) = 37.
    expect(sample(37, 6)).toEqual([28, 35, 29, 36, 32, 12]);
    expect(sample(38, 6)).toEqual([28, 35, 29, 37, 32, 12]);
    // k = 50: setsize 21 + 4**4 = 277.
    expect(sample(277, 50).slice(0, 10)).toEqual([231, 238, 276, 260, 97, 94, 262, 243, 95, 48]);
    expect(sample(278, 50).slice(0, 10)).toEqual([231, 238, 260, 97, 94, 262, 243, 95, 48, 228]);
    const random = new PythonRandom(7);
    expect(random.sample(range(10), 10)).toEqual([5, 2, 6, 9, 0, 7, 4, 1, 3, 8]);
    expect(random.sample(range(30), 8)).toEqual([1, 2, 13, 27, 28, 7, 25, 17]);
    expect(random.sample(range(20), 3)).toEqual([13, 1, 3]);
    expect(random.sample(range(100), 3)).toEqual([28, 80, 74]);
  });

  it('consumes nothing for sample(population, 0)', () => {
    const random = new PythonRandom(5);
    expect(random.sample([1, 2, 3, 4, 5], 0)).toEqual([]);
    expect(random.random()).toBe(0.6229016948897019);
  });

  it('refuses what CPython refuses with a PolyquantError', () => {
    const random = new PythonRandom(1);
    expect(() => random.sample([1, 2, 3], 4)).toThrow(PolyquantError);
    expect(() => random.randrange(0)).toThrow(PolyquantError);
    expect(() => random.randrange(5, 5)).toThrow(PolyquantError);
    expect(() => random.choice([])).toThrow(PolyquantError);
    expect(() => random.getrandbits(-1)).toThrow(PolyquantError);
    expect(() => new PythonRandom(1.5)).toThrow(/integer/);
  });
});

interface GoldenTask {
  n_test: number;
  n_train: number;
  shuffled_test_order: number[];
  [key: `fewshot_k${number}_first12_docs`]: number[][];
}
interface Golden {
  python: string;
  basics: {
    seed42_random_first8: number[];
    seed42_getrandbits32_first8: number[];
    seed1234_randbelow_via_randrange_3665_first8: number[];
  };
  kobest: Record<string, GoldenTask>;
}

describe.skipIf(!HAS_SHARED)('PythonRandom against golden/python-random/kobest-lm-eval.json', () => {
  const golden = (): Golden =>
    JSON.parse(readFileSync(sharedPath('golden', 'python-random', 'kobest-lm-eval.json'), 'utf8')) as Golden;

  it('was produced by CPython 3.11, whose shuffle and sample this module follows', () => {
    expect(golden().python).toMatch(/^3\.11\./);
  });

  it('matches the basics: random(), getrandbits(32) and randrange(3665)', () => {
    const { basics } = golden();
    const forRandom = new PythonRandom(42);
    expect(basics.seed42_random_first8.map(() => forRandom.random())).toEqual(basics.seed42_random_first8);
    const forBits = new PythonRandom(42);
    expect(basics.seed42_getrandbits32_first8.map(() => Number(forBits.getrandbits(32)))).toEqual(
      basics.seed42_getrandbits32_first8,
    );
    const forRange = new PythonRandom(1234);
    expect(basics.seed1234_randbelow_via_randrange_3665_first8.map(() => forRange.randrange(3665))).toEqual(
      basics.seed1234_randbelow_via_randrange_3665_first8,
    );
  });

  const tasks = ['boolq', 'copa', 'wic', 'hellaswag', 'sentineg'] as const;
  for (const task of tasks) {
    it(`reproduces the ${task} test-document order and the 0/5/10/50-shot draws of its first 12 documents`, () => {
      const entry = golden().kobest[task]!;
      const shots = Object.keys(entry)
        .map((key) => /^fewshot_k(\d+)_first12_docs$/.exec(key)?.[1])
        .filter((value) => value !== undefined)
        .map(Number);
      expect(shots).toEqual([0, 5, 10, 50]);
      for (const k of shots) {
        const plan = planKobest({ documentCount: entry.n_test, trainCount: entry.n_train, shots: k, limit: 12 });
        expect(plan.fewshot).toEqual(entry[`fewshot_k${k}_first12_docs`]);
        expect(plan.order).toEqual(entry.shuffled_test_order.slice(0, 12));
      }
      const full = planKobest({ documentCount: entry.n_test, trainCount: entry.n_train, shots: 0 });
      expect(full.order).toEqual(entry.shuffled_test_order);
    });
  }
});
