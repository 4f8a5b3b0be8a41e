/**
 * The reference engine's matrix kernel: a few hundred bytes of WebAssembly SIMD, assembled here from
 * named opcodes rather than shipped as an opaque binary or built with a compiler we would have to depend
 * on. Plain TypeScript loops reach about 1 GFLOP/s per core on our CI machines (V8 does not vectorise and
 * every Float32Array load is widened to a double); this kernel reaches 10–20 GFLOP/s, which is what makes
 * perplexity over a 40k-token file practical in CI.
 *
 * One operation: Y[t, n] = Σ_k X[t, k] · W[n, k] — a window's activations times a weight matrix in its
 * Hugging Face `nn.Linear` layout ([out, in], rows contiguous), so no packing is needed and the same code
 * serves attention (queries × cached keys, probabilities × transposed cached values). Every operand is a
 * strided 2-D view of one shared linear memory, which is what lets worker threads share the weights.
 *
 * Summation order, which the engine's exactness guarantees rest on: each output accumulates in four
 * float32 lanes (lane l takes k ≡ l mod 4, in increasing k), then a scalar tail of depth mod 4 elements
 * goes into lane 0, then the lanes are reduced as (l0 + l1) + (l2 + l3). That order depends only on the
 * depth, never on the tile shape or on which rows share a call, so scoring a sequence whole, in steps,
 * or continued from a KV cache gives bit-identical results.
 *
 * Encoding: WebAssembly core specification §5 (binary format) and the fixed-width SIMD proposal's opcode
 * table (https://github.com/WebAssembly/simd/blob/main/proposals/simd/BinarySIMD.md).
 */

/**
 * The slice of the WebAssembly JS API we use, typed here: tsconfig's lib (ES2023, no DOM) declares no
 * WebAssembly globals, and a global augmentation would leak into every other module.
 */
export interface WasmMemory {
  readonly buffer: SharedArrayBuffer;
}
interface WasmModule {
  readonly kind?: 'module';
}
interface WasmInstance {
  readonly exports: Record<string, unknown>;
}
interface WasmApi {
  readonly Memory: new (descriptor: { initial: number; maximum: number; shared: true }) => WasmMemory;
  readonly Module: new (bytes: Uint8Array) => WasmModule;
  readonly Instance: new (module: WasmModule, imports: Record<string, Record<string, unknown>>) => WasmInstance;
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** A shared memory of `pages` 64 KiB pages (its buffer is a SharedArrayBuffer, postable to workers). */
export function sharedMemory(pages: number): WasmMemory {
  return new wasm.Memory({ initial: pages, maximum: pages, shared: true });
}

/** Instruction bytes (core spec §5.4; SIMD instructions are 0xFD + a LEB128 opcode). */
const OP = {
  block: 0x02,
  loop: 0x03,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  f32Store: 0x38,
  i32Const: 0x41,
  i32GeU: 0x4f,
  f32Add: 0x92,
  f64Add: 0xa0,
  f64Const: 0x44,
  i32Add: 0x6a,
  i32Mul: 0x6c,
  i32And: 0x71,
  i32Shl: 0x74,
  simd: 0xfd,
} as const;

const SIMD = {
  v128Load: 0x00,
  v128Const: 0x0c,
  f64x2Splat: 0x14,
  f32x4ExtractLane: 0x1f,
  f64x2ExtractLane: 0x21,
  v128Load32Zero: 0x5c,
  v128Load64Zero: 0x5d,
  f64x2PromoteLowF32x4: 0x5f,
  i64x2Shl: 0xcb,
  i64x2Add: 0xce,
  f32x4Add: 0xe4,
  f32x4Mul: 0xe6,
  f64x2Add: 0xf0,
  f64x2Sub: 0xf1,
  f64x2Mul: 0xf2,
  f64x2Pmax: 0xf7,
} as const;

const VALTYPE = { i32: 0x7f, f64: 0x7c, v128: 0x7b } as const;
/** `blocktype` for a block or loop that produces nothing. */
const EMPTY_BLOCK = 0x40;

function unsignedLeb(value: number): number[] {
  const out: number[] = [];
  let rest = value >>> 0;
  do {
    let byte = rest & 0x7f;
    rest >>>= 7;
    if (rest !== 0) byte |= 0x80;
    out.push(byte);
  } while (rest !== 0);
  return out;
}

function signedLeb(value: number): number[] {
  const out: number[] = [];
  let rest = value | 0;
  for (;;) {
    const byte = rest & 0x7f;
    rest >>= 7;
    const done = (rest === 0 && (byte & 0x40) === 0) || (rest === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

const vector = (items: readonly number[][]): number[] => [...unsignedLeb(items.length), ...items.flat()];
const name = (text: string): number[] => vector([...Buffer.from(text, 'utf8')].map((byte) => [byte]));
const section = (id: number, body: number[]): number[] => [id, ...unsignedLeb(body.length), ...body];

/** Emits one function body; locals are numbered after the parameters. */
class FunctionAssembler {
  private readonly code: number[] = [];
  private readonly localTypes: number[] = [];

  constructor(private readonly parameterCount: number) {}

  local(type: number): number {
    this.localTypes.push(type);
    return this.parameterCount + this.localTypes.length - 1;
  }

  get(index: number): this {
    return this.emit(OP.localGet, ...unsignedLeb(index));
  }

  set(index: number): this {
    return this.emit(OP.localSet, ...unsignedLeb(index));
  }

  constant(value: number): this {
    return this.emit(OP.i32Const, ...signedLeb(value));
  }

  simd(opcode: number, ...immediates: number[]): this {
    return this.emit(OP.simd, ...unsignedLeb(opcode), ...immediates);
  }

  emit(...bytes: number[]): this {
    for (const byte of bytes) this.code.push(byte);
    return this;
  }

  /** `local = a + b` for i32 locals. */
  sum(target: number, a: number, b: number): this {
    return this.get(a).get(b).emit(OP.i32Add).set(target);
  }

  /** `local = local + step`. */
  increment(target: number, step: number): this {
    return this.get(target).constant(step).emit(OP.i32Add).set(target);
  }

  /**
   * `while (counter < limit) { body }`, with the test first (block/loop/br_if/br, core spec §5.4.1).
   * Counter and limit are i32 locals compared unsigned.
   */
  whileBelow(counter: number, limit: number, body: () => void): this {
    this.emit(OP.block, EMPTY_BLOCK, OP.loop, EMPTY_BLOCK);
    this.get(counter).get(limit).emit(OP.i32GeU, OP.brIf, 1);
    body();
    this.emit(OP.br, 0, OP.end, OP.end);
    return this;
  }

  finish(): number[] {
    const groups = this.localTypes.map((type) => [1, type]);
    const body = [...vector(groups), ...this.code, OP.end];
    return [...unsignedLeb(body.length), ...body];
  }
}

/** Parameters of every tile kernel, in order (addresses in bytes, everything else in elements). */
export const KERNEL_PARAMETERS = ['x', 'ldx', 'w', 'ldw', 'y', 'ldy', 'rows', 'cols', 'depth'] as const;

/** Tile shapes: rows of X × rows of W per inner loop. 2 × 4 keeps 8 accumulators + 3 operands in the
 * 16 vector registers of x86-64 (measured best among 1–4 × 1–8 on our CI machines). The narrower tiles
 * finish the edges: every output element takes the same arithmetic whatever tile computes it. */
export const TILES = [
  { rows: 2, cols: 4 },
  { rows: 1, cols: 4 },
  { rows: 2, cols: 1 },
  { rows: 1, cols: 1 },
] as const;

export type TileName = `matmul${(typeof TILES)[number]['rows']}x${(typeof TILES)[number]['cols']}`;

export const tileName = (rows: number, cols: number): TileName => `matmul${rows}x${cols}` as TileName;

/**
 * Y[t, n] = Σ_k X[t, k]·W[n, k] for t < rows, n < cols, over tiles of tileRows × tileCols outputs;
 * rows and cols must be multiples of the tile (the caller splits off the edges).
 */
function tileKernel(tileRows: number, tileCols: number): number[] {
  const f = new FunctionAssembler(KERNEL_PARAMETERS.length);
  const [x, ldx, w, ldw, y, ldy, rows, cols, depth] = KERNEL_PARAMETERS.map((_, index) => index) as number[] as [
    number, number, number, number, number, number, number, number, number,
  ];
  const i32 = (): number => f.local(VALTYPE.i32);
  const ldxBytes = i32();
  const ldwBytes = i32();
  const ldyBytes = i32();
  const depthBytes = i32();
  const vectorDepthBytes = i32();
  const n = i32();
  const t = i32();
  const k = i32();
  const yRow = i32();
  const wRows = Array.from({ length: tileCols }, i32);
  const xRows = Array.from({ length: tileRows }, i32);
  const accumulators = Array.from({ length: tileRows }, () => Array.from({ length: tileCols }, () => f.local(VALTYPE.v128)));
  const xValues = Array.from({ length: tileRows }, () => f.local(VALTYPE.v128));
  const wValue = f.local(VALTYPE.v128);

  const shiftToBytes = (target: number, source: number): void => {
    f.get(source).constant(2).emit(OP.i32Shl).set(target);
  };
  shiftToBytes(ldxBytes, ldx);
  shiftToBytes(ldwBytes, ldw);
  shiftToBytes(ldyBytes, ldy);
  shiftToBytes(depthBytes, depth);
  f.get(depth).constant(~3).emit(OP.i32And).constant(2).emit(OP.i32Shl).set(vectorDepthBytes);

  /**
   * acc[i][j] += x_i · w_j over one step of k, loading with `load` (a full vector, or one lane for the
   * tail). Unrolling this loop (memarg offsets) measured slower under V8: it spills accumulators.
   */
  const multiplyAccumulate = (load: number): void => {
    const memarg = [0, 0]; // alignment hint 2^0 (operands may be unaligned), offset 0
    for (let i = 0; i < tileRows; i += 1) {
      f.get(xRows[i] as number).get(k).emit(OP.i32Add).simd(load, ...memarg).set(xValues[i] as number);
    }
    for (let j = 0; j < tileCols; j += 1) {
      f.get(wRows[j] as number).get(k).emit(OP.i32Add).simd(load, ...memarg).set(wValue);
      for (let i = 0; i < tileRows; i += 1) {
        const accumulator = accumulators[i]?.[j] as number;
        f.get(accumulator).get(xValues[i] as number).get(wValue).simd(SIMD.f32x4Mul).simd(SIMD.f32x4Add).set(accumulator);
      }
    }
  };

  f.constant(0).set(n);
  f.whileBelow(n, cols, () => {
    // wRows[j] = w + (n + j)·ldw·4
    for (let j = 0; j < tileCols; j += 1) {
      f.get(n).constant(j).emit(OP.i32Add).get(ldwBytes).emit(OP.i32Mul).get(w).emit(OP.i32Add).set(wRows[j] as number);
    }
    f.constant(0).set(t);
    f.whileBelow(t, rows, () => {
      for (let i = 0; i < tileRows; i += 1) {
        f.get(t).constant(i).emit(OP.i32Add).get(ldxBytes).emit(OP.i32Mul).get(x).emit(OP.i32Add).set(xRows[i] as number);
      }
      for (const row of accumulators) {
        for (const accumulator of row) f.simd(SIMD.v128Const, ...new Array<number>(16).fill(0)).set(accumulator);
      }
      f.constant(0).set(k);
      f.whileBelow(k, vectorDepthBytes, () => {
        multiplyAccumulate(SIMD.v128Load);
        f.increment(k, 16);
      });
      // The depth mod 4 tail, one element at a time into lane 0 (load32_zero clears the other lanes).
      f.whileBelow(k, depthBytes, () => {
        multiplyAccumulate(SIMD.v128Load32Zero);
        f.increment(k, 4);
      });
      for (let i = 0; i < tileRows; i += 1) {
        // yRow = y + (t + i)·ldy·4 + n·4
        f.get(t).constant(i).emit(OP.i32Add).get(ldyBytes).emit(OP.i32Mul).get(y).emit(OP.i32Add);
        f.get(n).constant(2).emit(OP.i32Shl).emit(OP.i32Add).set(yRow);
        for (let j = 0; j < tileCols; j += 1) {
          const accumulator = accumulators[i]?.[j] as number;
          const lane = (index: number): void => {
            f.get(accumulator).simd(SIMD.f32x4ExtractLane, index);
          };
          f.get(yRow);
          lane(0);
          lane(1);
          f.emit(OP.f32Add);
          lane(2);
          lane(3);
          f.emit(OP.f32Add, OP.f32Add);
          f.emit(OP.f32Store, 2, ...unsignedLeb(j * 4));
        }
      }
      f.increment(t, tileRows);
    });
    f.increment(n, tileCols);
  });
  return f.finish();
}

/** A v128.const immediate holding two copies of a double. */
function f64x2Constant(value: number): number[] {
  return [...new Uint8Array(Float64Array.of(value, value).buffer)];
}

function i64x2Constant(value: bigint): number[] {
  return [...new Uint8Array(BigInt64Array.of(value, value).buffer)];
}

/** ln 2 split so that n·LN2_HI is exact for |n| < 2^11 (fdlibm e_exp.c's ln2HI/ln2LO, same doubles). */
const LN2_HI = 0.6931471803691238;
const LN2_LO = 1.9082149292705877e-10;
/** Taylor terms 1/k! for e^r, |r| ≤ ln2/2: the first omitted term is below 2e-16 relative. */
const EXP_TERMS = 13;
/** exp(−700) ≈ 1e−304: below it a term cannot move a sum that includes the maximum's exp(0) = 1. */
const EXP_FLOOR = -700;
/** Elements per sumExp iteration = 2 × EXP_CHAINS; count must be a multiple of it. */
const EXP_CHAINS = 4;
export const SUM_EXP_BLOCK = 2 * EXP_CHAINS;

/**
 * sumExp(x, count, shift) = Σ_{i<count} exp(X[i] − shift) in double, for float32 X at byte address x and
 * count a multiple of SUM_EXP_BLOCK: the log-sum-exp of a vocabulary row, the one part of scoring that is
 * not a matmul (with Math.exp it took as long as the output head's matmul). Pairs of f64 lanes:
 * e^v = 2^n·e^r with n = round(v/ln 2) and r = v − n·ln 2, e^r by its Taylor polynomial, 2^n built in
 * the exponent bits; within 2 ulp of Math.exp. NaN inputs are clamped like −∞: callers check for NaN.
 */
function sumExpKernel(): number[] {
  const [x, count, shift] = [0, 1, 2];
  const f = new FunctionAssembler(3);
  const i = f.local(VALTYPE.i32);
  const end = f.local(VALTYPE.i32);
  const chains = Array.from({ length: EXP_CHAINS }, () => ({
    value: f.local(VALTYPE.v128),
    rounded: f.local(VALTYPE.v128),
    n: f.local(VALTYPE.v128),
    r: f.local(VALTYPE.v128),
    polynomial: f.local(VALTYPE.v128),
    sum: f.local(VALTYPE.v128),
  }));
  // Constants are set once into locals rather than v128.const at each use inside the loop.
  const constant = (bytes: number[]): number => {
    const local = f.local(VALTYPE.v128);
    f.simd(SIMD.v128Const, ...bytes).set(local);
    return local;
  };
  const shifts = f.local(VALTYPE.v128);
  f.get(shift).simd(SIMD.f64x2Splat).set(shifts);
  const floor = constant(f64x2Constant(EXP_FLOOR));
  const log2e = constant(f64x2Constant(Math.LOG2E));
  const magic = constant(f64x2Constant(1.5 * 2 ** 52));
  const ln2High = constant(f64x2Constant(LN2_HI));
  const ln2Low = constant(f64x2Constant(LN2_LO));
  const exponentBias = constant(i64x2Constant(1023n));
  let factorial = 1;
  const terms: number[] = [];
  for (let k = 0; k < EXP_TERMS; k += 1) {
    if (k > 0) factorial *= k;
    terms.push(constant(f64x2Constant(1 / factorial)));
  }
  for (const chain of chains) f.simd(SIMD.v128Const, ...f64x2Constant(0)).set(chain.sum);
  f.get(count).constant(2).emit(OP.i32Shl).set(end);
  f.constant(0).set(i);
  // Independent chains, emitted step by step side by side: one chain is a ~30-deep dependency of
  // 4-cycle operations, so several must be in flight to keep the vector units busy.
  const each = (step: (chain: (typeof chains)[number], index: number) => void): void => chains.forEach(step);
  f.whileBelow(i, end, () => {
    // value = max(promote(X[i], X[i+1]) − shift, EXP_FLOOR)
    each((c, index) => {
      f.get(floor);
      f.get(x).get(i).emit(OP.i32Add).simd(SIMD.v128Load64Zero, 0, ...unsignedLeb(index * 8)).simd(SIMD.f64x2PromoteLowF32x4);
      f.get(shifts).simd(SIMD.f64x2Sub).simd(SIMD.f64x2Pmax).set(c.value);
    });
    // rounded = value·log2 e + 1.5·2^52 holds n = round(value·log2 e) in its low mantissa bits (the
    // addition rounds to an integer); n = rounded − 1.5·2^52; r = (value − n·LN2_HI) − n·LN2_LO
    each((c) => f.get(c.value).get(log2e).simd(SIMD.f64x2Mul).get(magic).simd(SIMD.f64x2Add).set(c.rounded));
    each((c) => f.get(c.rounded).get(magic).simd(SIMD.f64x2Sub).set(c.n));
    each((c) => {
      f.get(c.value).get(c.n).get(ln2High).simd(SIMD.f64x2Mul).simd(SIMD.f64x2Sub);
      f.get(c.n).get(ln2Low).simd(SIMD.f64x2Mul).simd(SIMD.f64x2Sub).set(c.r);
    });
    // Horner: p = (…(c12·r + c11)·r + …)·r + c0 with c_k = 1/k!
    each((c) => f.get(terms[EXP_TERMS - 1] as number).set(c.polynomial));
    for (let k = EXP_TERMS - 2; k >= 0; k -= 1) {
      each((c) => f.get(c.polynomial).get(c.r).simd(SIMD.f64x2Mul).get(terms[k] as number).simd(SIMD.f64x2Add).set(c.polynomial));
    }
    // 2^n as bits: (n + 1023) << 52, taking n from rounded's low bits (the shift drops the rest);
    // n ≥ −1010 here, so it is a normal double.
    each((c) => {
      f.get(c.sum).get(c.polynomial);
      f.get(c.rounded).get(exponentBias).simd(SIMD.i64x2Add).constant(52).simd(SIMD.i64x2Shl);
      f.simd(SIMD.f64x2Mul).simd(SIMD.f64x2Add).set(c.sum);
    });
    f.increment(i, 8 * EXP_CHAINS);
  });
  // Lanes summed in a fixed order: chain by chain, lane 0 then lane 1.
  f.emit(OP.f64Const, ...new Uint8Array(Float64Array.of(0).buffer));
  for (const c of chains) {
    f.get(c.sum).simd(SIMD.f64x2ExtractLane, 0).emit(OP.f64Add);
    f.get(c.sum).simd(SIMD.f64x2ExtractLane, 1).emit(OP.f64Add);
  }
  return f.finish();
}

/** Pages of 64 KiB; a wasm32 memory holds at most 65536 of them (4 GiB). */
export const WASM_PAGE_BYTES = 65536;
export const WASM_MAX_PAGES = 65536;

let cachedModule: WasmModule | undefined;

/**
 * The kernel module's bytes: imports `env.memory` (shared); exports one function per tile shape, then
 * `sumExp`.
 */
export function kernelModuleBytes(): Uint8Array {
  const tileType = [0x60, ...vector(KERNEL_PARAMETERS.map(() => [VALTYPE.i32])), ...vector([])];
  const sumExpType = [0x60, ...vector([[VALTYPE.i32], [VALTYPE.i32], [VALTYPE.f64]]), ...vector([[VALTYPE.f64]])];
  // limits flag 0x03: shared, with a maximum (threads proposal); min 1 page, max 4 GiB.
  const memoryImport = [...name('env'), ...name('memory'), 0x02, 0x03, ...unsignedLeb(1), ...unsignedLeb(WASM_MAX_PAGES)];
  const functionNames = [...TILES.map((tile) => tileName(tile.rows, tile.cols)), 'sumExp'];
  const exports = functionNames.map((functionName, index) => [...name(functionName), 0x00, ...unsignedLeb(index)]);
  const typeIndices = [...TILES.map(() => [0]), [1]];
  const bodies = [...TILES.map((tile) => tileKernel(tile.rows, tile.cols)), sumExpKernel()];
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vector([tileType, sumExpType])),
    ...section(2, vector([memoryImport])),
    ...section(3, vector(typeIndices)),
    ...section(7, vector(exports)),
    ...section(10, vector(bodies)),
  ]);
}

export function kernelModule(): WasmModule {
  cachedModule ??= new wasm.Module(kernelModuleBytes());
  return cachedModule;
}

type TileFunction = (x: number, ldx: number, w: number, ldw: number, y: number, ldy: number, rows: number, cols: number, depth: number) => void;

/**
 * Y = X·Wᵀ on views of one memory. Addresses are in bytes; strides and sizes in elements. Rows of X are
 * processed in blocks whose bytes fit in L2, so each block streams W from memory once.
 */
export class MatrixKernels {
  private readonly tiles: Record<TileName, TileFunction>;

  constructor(memory: WasmMemory) {
    const instance = new wasm.Instance(kernelModule(), { env: { memory } });
    const tiles = {} as Record<TileName, TileFunction>;
    for (const tile of TILES) {
      const exported = instance.exports[tileName(tile.rows, tile.cols)];
      if (typeof exported !== 'function') throw new Error(`the kernel module lacks ${tileName(tile.rows, tile.cols)}`);
      tiles[tileName(tile.rows, tile.cols)] = exported as TileFunction;
    }
    this.tiles = tiles;
    const sumExp = instance.exports['sumExp'];
    if (typeof sumExp !== 'function') throw new Error('the kernel module lacks sumExp');
    this.sumExpEven = sumExp as (x: number, count: number, shift: number) => number;
    this.floats = new Float32Array(memory.buffer);
  }

  private readonly sumExpEven: (x: number, count: number, shift: number) => number;
  private readonly floats: Float32Array;

  /** Σ_{i<count} exp(X[i] − shift) in double, for float32 X at byte address x (exact to ~1e-16 relative). */
  sumExp(x: number, count: number, shift: number): number {
    const blocked = count - (count % SUM_EXP_BLOCK);
    let sum = this.sumExpEven(x, blocked, shift);
    for (let i = blocked; i < count; i += 1) sum += Math.exp((this.floats[x / 4 + i] as number) - shift);
    return sum;
  }

  /** Y[t·ldy + n] = Σ_k X[t·ldx + k]·W[n·ldw + k] for t < rows, n < cols, k < depth. */
  matmul(x: number, ldx: number, w: number, ldw: number, y: number, ldy: number, rows: number, cols: number, depth: number): void {
    if (rows <= 0 || cols <= 0) return;
    // ~128 KiB of X per block: L2-resident while a 4-row panel of W (≤ 16 KiB at depth 1024) sits in L1.
    const blockRows = Math.max(2, Math.min(rows, (Math.floor(32768 / Math.max(depth, 1)) >> 1) << 1));
    const evenCols = cols & ~3;
    for (let start = 0; start < rows; start += blockRows) {
      const count = Math.min(blockRows, rows - start);
      const evenRows = count & ~1;
      const xBlock = x + start * ldx * 4;
      const yBlock = y + start * ldy * 4;
      if (evenRows > 0 && evenCols > 0) this.tiles.matmul2x4(xBlock, ldx, w, ldw, yBlock, ldy, evenRows, evenCols, depth);
      if (evenRows > 0 && evenCols < cols) {
        this.tiles.matmul2x1(xBlock, ldx, w + evenCols * ldw * 4, ldw, yBlock + evenCols * 4, ldy, evenRows, cols - evenCols, depth);
      }
      if (evenRows < count) {
        const xLast = xBlock + evenRows * ldx * 4;
        const yLast = yBlock + evenRows * ldy * 4;
        if (evenCols > 0) this.tiles.matmul1x4(xLast, ldx, w, ldw, yLast, ldy, 1, evenCols, depth);
        if (evenCols < cols) this.tiles.matmul1x1(xLast, ldx, w + evenCols * ldw * 4, ldw, yLast + evenCols * 4, ldy, 1, cols - evenCols, depth);
      }
    }
  }
}
