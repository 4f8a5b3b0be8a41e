/**
 * CPython's `random.Random`, bit for bit: the MT19937 core of Modules/_randommodule.c and the pure-Python
 * methods of Lib/random.py (3.11, the version /work/shared/golden/python-random was produced with) that
 * lm-evaluation-harness uses for KOBEST — `seed(int)`, `shuffle` and `sample` — plus the few cheap
 * siblings (`random`, `getrandbits`, `randrange`, `randint`, `choice`).
 *
 * Why not any other PRNG: the harness shuffles the evaluated documents with `random.Random(42)` and draws
 * every few-shot set from the same generator, so the documents a `--limit` keeps and the prompts they get
 * are only reproducible with Python's exact stream (specs/eval.md §2a).
 *
 * All arithmetic is exact: 32-bit words through `Math.imul` and `>>> 0`; `_randbelow` works on plain
 * numbers up to 2**53 (a double holds them exactly) and `getrandbits` returns a bigint for any width.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';

/** MT19937 state size and twist offset (`N`, `M` in _randommodule.c). */
const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;
/** The fixed seed init_by_array starts from (Matsumoto & Nishimura's mt19937ar.c, kept by CPython). */
const INIT_BY_ARRAY_SEED = 19650218;
/** Largest integer a double holds exactly: the bound for the number-typed `_randbelow`. */
const MAX_EXACT = 2 ** 53;
const TWO_POW_32 = 2 ** 32;

function usage(detail: string): PolyquantError {
  return new PolyquantError(ERROR_CODES.USAGE, detail);
}

/** An integer a double holds exactly (|n| ≤ 2**53; 2**53 itself included, unlike Number.isSafeInteger). */
function isExactInteger(n: number): boolean {
  return Number.isInteger(n) && Math.abs(n) <= MAX_EXACT;
}

/** int.bit_length() for 0 ≤ n ≤ 2**53, exactly (no Math.log2 rounding). */
function bitLength(n: number): number {
  if (n < TWO_POW_32) return 32 - Math.clz32(n);
  // Division by a power of two is exact in binary floating point.
  return 64 - Math.clz32(Math.floor(n / TWO_POW_32));
}

export type PythonSeed = number | bigint;

export class PythonRandom {
  private readonly mt = new Uint32Array(N);
  private index = N + 1;

  /** `random.Random(seed)`. Only integer seeds: Python hashes other types, which the harness never uses. */
  constructor(seed: PythonSeed) {
    this.seed(seed);
  }

  /**
   * `Random.seed(a)` for an int `a`: random_seed() in _randommodule.c takes |a|, splits it into 32-bit
   * words, least significant first (a zero seed is the one word [0]), and calls init_by_array with them.
   * So `Random(42)` is init_by_array([42]), not init_genrand(42).
   */
  seed(seed: PythonSeed): void {
    let magnitude: bigint;
    if (typeof seed === 'bigint') {
      magnitude = seed < 0n ? -seed : seed;
    } else {
      if (!Number.isSafeInteger(seed)) {
        throw usage(`Python random seed must be an integer (a safe integer or a bigint), got ${seed}`);
      }
      magnitude = BigInt(Math.abs(seed));
    }
    const key: number[] = [];
    do {
      key.push(Number(magnitude & 0xffffffffn));
      magnitude >>= 32n;
    } while (magnitude > 0n);
    this.initByArray(key);
  }

  /** init_genrand() in _randommodule.c: Knuth's multiplier 1812433253 over the previous word. */
  private initGenrand(seed: number): void {
    const mt = this.mt;
    mt[0] = seed >>> 0;
    for (let i = 1; i < N; i++) {
      const previous = mt[i - 1]!;
      mt[i] = (Math.imul(1812433253, (previous ^ (previous >>> 30)) >>> 0) + i) >>> 0;
    }
    this.index = N;
  }

  /** init_by_array() in _randommodule.c (mt19937ar.c's 2002 initialisation). */
  private initByArray(key: readonly number[]): void {
    const mt = this.mt;
    this.initGenrand(INIT_BY_ARRAY_SEED);
    let i = 1;
    let j = 0;
    for (let k = Math.max(N, key.length); k > 0; k--) {
      const previous = mt[i - 1]!;
      const mixed = (mt[i]! ^ Math.imul((previous ^ (previous >>> 30)) >>> 0, 1664525)) >>> 0;
      mt[i] = (mixed + key[j]! + j) >>> 0; // non-linear; `+ j` as in the C source
      i++;
      j++;
      if (i >= N) {
        mt[0] = mt[N - 1]!;
        i = 1;
      }
      if (j >= key.length) j = 0;
    }
    for (let k = N - 1; k > 0; k--) {
      const previous = mt[i - 1]!;
      const mixed = (mt[i]! ^ Math.imul((previous ^ (previous >>> 30)) >>> 0, 1566083941)) >>> 0;
      mt[i] = (mixed - i) >>> 0;
      i++;
      if (i >= N) {
        mt[0] = mt[N - 1]!;
        i = 1;
      }
    }
    mt[0] = 0x80000000; // MSB is 1, assuring a non-zero initial array
    this.index = N;
  }

  /** genrand_uint32() in _randommodule.c: one tempered 32-bit output, twisting the state every N draws. */
  nextUint32(): number {
    const mt = this.mt;
    if (this.index >= N) {
      for (let kk = 0; kk < N; kk++) {
        const y = (mt[kk]! & UPPER_MASK) | (mt[(kk + 1) % N]! & LOWER_MASK);
        mt[kk] = (mt[(kk + M) % N]! ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0)) >>> 0;
      }
      this.index = 0;
    }
    let y = mt[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** `random()`: random_random() in C, 53 bits from two words, a>>5 and b>>6, as (a·2**26 + b) / 2**53. */
  random(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /**
   * `getrandbits(k)`: _random_Random_getrandbits_impl in C. Up to 32 bits come from the top of one word;
   * wider values are built from words least significant first, the last word dropping its low bits.
   */
  getrandbits(k: number): bigint {
    if (!Number.isSafeInteger(k) || k < 0) throw usage(`number of bits must be a non-negative integer, got ${k}`);
    if (k <= 53) return BigInt(this.bitsAsNumber(k));
    let result = 0n;
    let shift = 0n;
    for (let remaining = k; remaining > 0; remaining -= 32, shift += 32n) {
      let word = this.nextUint32();
      if (remaining < 32) word >>>= 32 - remaining;
      result |= BigInt(word) << shift;
    }
    return result;
  }

  /** getrandbits(k) for k ≤ 53 as an exact number: the same words, combined without bigint. */
  private bitsAsNumber(k: number): number {
    if (k === 0) return 0; // Python ≥ 3.9 returns 0 without consuming a word
    if (k <= 32) return this.nextUint32() >>> (32 - k);
    const low = this.nextUint32();
    const high = this.nextUint32() >>> (64 - k);
    return high * TWO_POW_32 + low;
  }

  /**
   * `_randbelow_with_getrandbits(n)` (random.py): rejection sampling with k = n.bit_length() bits —
   * not (n−1).bit_length(), so a power of two wastes half its draws, exactly as CPython does.
   */
  randbelow(n: number): number {
    if (!isExactInteger(n) || n <= 0) {
      throw usage(`randbelow needs an integer 0 < n ≤ 2**53, got ${n}`);
    }
    const k = bitLength(n);
    let r = this.bitsAsNumber(k);
    while (r >= n) r = this.bitsAsNumber(k);
    return r;
  }

  /** `randrange(start, stop?, step = 1)` (random.py, integer arguments). */
  randrange(start: number, stop?: number, step = 1): number {
    for (const value of [start, stop ?? 0, step]) {
      if (!isExactInteger(value)) throw usage(`randrange needs integer arguments up to 2**53, got ${value}`);
    }
    if (stop === undefined) {
      if (start > 0) return this.randbelow(start);
      throw usage(`empty range for randrange(${start})`);
    }
    const width = stop - start;
    if (step === 1) {
      if (width > 0) return start + this.randbelow(width);
      throw usage(`empty range for randrange(${start}, ${stop})`);
    }
    let count: number;
    if (step > 0) count = Math.floor((width + step - 1) / step);
    else if (step < 0) count = Math.floor((width + step + 1) / step);
    else throw usage('zero step for randrange()');
    if (count <= 0) throw usage(`empty range for randrange(${start}, ${stop}, ${step})`);
    return start + step * this.randbelow(count);
  }

  /** `randint(a, b)` = randrange(a, b + 1). */
  randint(low: number, high: number): number {
    return this.randrange(low, high + 1);
  }

  /** `choice(seq)` = seq[_randbelow(len(seq))] (3.11). */
  choice<T>(sequence: readonly T[]): T {
    if (sequence.length === 0) throw usage('cannot choose from an empty sequence');
    return sequence[this.randbelow(sequence.length)]!;
  }

  /** `shuffle(x)` (random.py, 3.11): in place, i from len−1 down to 1 swapping x[i] with x[_randbelow(i+1)]. */
  shuffle<T>(items: T[]): void {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.randbelow(i + 1);
      const swap = items[i]!;
      items[i] = items[j]!;
      items[j] = swap;
    }
  }

  /**
   * `sample(population, k)` (random.py, 3.11, without `counts`). Two algorithms, chosen by `setsize`:
   * when n ≤ setsize a copy of the population is drawn from like a partial Fisher–Yates ("pool"),
   * otherwise indices are drawn with _randbelow(n) and redrawn when already chosen ("selected set").
   * The two consume the generator differently, so the choice must match CPython's exactly.
   */
  sample<T>(population: readonly T[], k: number): T[] {
    const n = population.length;
    if (!Number.isSafeInteger(k) || k < 0 || k > n) {
      throw usage(`sample larger than population or is negative: k = ${k}, population of ${n}`);
    }
    const result: T[] = new Array<T>(k);
    // setsize = 21, plus 4 ** ceil(log(3k, 4)) when k > 5: the size of a small set, in random.py's words
    // "table size for big sets is larger". math.log(x, base) is log(x) / log(base).
    let setsize = 21;
    if (k > 5) setsize += 4 ** Math.ceil(Math.log(k * 3) / Math.log(4));
    if (n <= setsize) {
      const pool = population.slice();
      for (let i = 0; i < k; i++) {
        const j = this.randbelow(n - i);
        result[i] = pool[j]!;
        pool[j] = pool[n - i - 1]!; // move the non-selected item into the vacancy
      }
    } else {
      const selected = new Set<number>();
      for (let i = 0; i < k; i++) {
        let j = this.randbelow(n);
        while (selected.has(j)) j = this.randbelow(n);
        selected.add(j);
        result[i] = population[j]!;
      }
    }
    return result;
  }
}
