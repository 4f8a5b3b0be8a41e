/**
 * GPTQ's matrix kernels (assembly/gptq.ts, WebAssembly SIMD) and their TypeScript twins, which give the
 * same bits (test/gptq.test.ts) and run when `POLYQUANT_KERNELS=js` chooses the TypeScript kernels.
 *
 * Each thread has one kernel memory, grown as needed and never shrunk: a worker that quantizes rows of a
 * 8192-column matrix holds its 256 MiB feedback matrix there until the next matrix replaces it. Operands
 * are addressed by float32 index into that memory (`floats()`); `reserve` may move the buffer, so views
 * are taken again after it.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { WASM_BASE64 } from './wasm/gptq.generated.js';
import { kernelBackend } from './wasm/runtime.js';

interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  readonly Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory;
  readonly Module: new (bytes: Uint8Array) => object;
  readonly Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { readonly exports: Record<string, unknown> };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

const PAGE = 65536;
/** A wasm32 memory holds at most 4 GiB. */
const MAX_BYTES = 65536 * PAGE;

type GemmExport = (x: number, ldx: number, w: number, ldw: number, y: number, ldy: number, rows: number, cols: number, depth: number, subtract: number) => void;
type PanelExport = (a: number, lda: number, j0: number, width: number, n: number) => number;

/** Depth per slice of the summation order (assembly/gptq.ts DEPTH_SLICE). */
export const DEPTH_SLICE = 512;

/** The thread's kernel memory and the two kernels over it (WebAssembly or TypeScript). */
export interface GptqKernels {
  /** First float32 index the caller may use (above the module's statics), a multiple of 4. */
  readonly base: number;
  /** Grows the memory to hold float32 indices below `end`. */
  reserve(end: number): void;
  /** The memory as float32 (a fresh view after each `reserve`). */
  floats(): Float32Array;
  /** Y[r·ldy + c] ±= Σ_{k<depth} X[r·ldx + k]·W[c·ldw + k]; x, w, y are float32 indices. */
  gemm(x: number, ldx: number, w: number, ldw: number, y: number, ldy: number, rows: number, cols: number, depth: number, subtract: boolean): void;
  /** One panel of the blocked Cholesky (assembly/gptq.ts cholesky_panel); −1, or the failing column. */
  choleskyPanel(a: number, lda: number, j0: number, width: number, n: number): number;
}

let wasmKernels: GptqKernels | undefined;
let jsKernels: GptqKernels | undefined;

/** This thread's kernels: WebAssembly unless the TypeScript kernels are chosen (runtime.ts setKernelBackend). */
export function gptqKernels(): GptqKernels {
  if (kernelBackend() === 'js') {
    jsKernels ??= createJsKernels();
    return jsKernels;
  }
  wasmKernels ??= createWasmKernels();
  return wasmKernels;
}

function createWasmKernels(): GptqKernels {
  const memory = new wasm.Memory({ initial: 1 });
  const instance = new wasm.Instance(new wasm.Module(Buffer.from(WASM_BASE64, 'base64')), { env: { memory } });
  const gemm = instance.exports['gemm_nt'] as GemmExport;
  const panel = instance.exports['cholesky_panel'] as PanelExport;
  const heapBase = (instance.exports['heapBase'] as () => number)();
  let view = new Float32Array(memory.buffer);
  return {
    base: Math.ceil(heapBase / 16) * 4,
    reserve(end: number): void {
      const bytes = end * 4;
      if (bytes > MAX_BYTES) {
        throw new PolyquantError(ERROR_CODES.LIMIT, `GPTQ needs ${bytes} bytes of kernel memory, more than WebAssembly's 4 GiB`, {
          hint: 'a Hessian of more than about 30000 columns does not fit; quantize that tensor without --optimize',
        });
      }
      const have = memory.buffer.byteLength;
      if (bytes > have) memory.grow(Math.ceil((bytes - have) / PAGE));
    },
    floats(): Float32Array {
      if (view.buffer !== memory.buffer) view = new Float32Array(memory.buffer);
      return view;
    },
    gemm(x, ldx, w, ldw, y, ldy, rows, cols, depth, subtract): void {
      gemm(x * 4, ldx, w * 4, ldw, y * 4, ldy, rows, cols, depth, subtract ? 1 : 0);
    },
    choleskyPanel(a, lda, j0, width, n): number {
      return panel(a * 4, lda, j0, width, n);
    },
  };
}

const fround = Math.fround;

/** Σ_k x[k]·w[k] over `depth` in the kernels' order (four lanes, the tail into lane 0, (l0+l1)+(l2+l3)). */
function dot(m: Float32Array, x: number, w: number, depth: number): number {
  let l0 = 0;
  let l1 = 0;
  let l2 = 0;
  let l3 = 0;
  const vectorEnd = depth & ~3;
  for (let k = 0; k < vectorEnd; k += 4) {
    l0 = fround(l0 + fround((m[x + k] as number) * (m[w + k] as number)));
    l1 = fround(l1 + fround((m[x + k + 1] as number) * (m[w + k + 1] as number)));
    l2 = fround(l2 + fround((m[x + k + 2] as number) * (m[w + k + 2] as number)));
    l3 = fround(l3 + fround((m[x + k + 3] as number) * (m[w + k + 3] as number)));
  }
  for (let k = vectorEnd; k < depth; k += 1) l0 = fround(l0 + fround((m[x + k] as number) * (m[w + k] as number)));
  return fround(fround(l0 + l1) + fround(l2 + l3));
}

function createJsKernels(): GptqKernels {
  let memory = new Float32Array(1 << 14);
  return {
    base: 0,
    reserve(end: number): void {
      if (end > memory.length) {
        const grown = new Float32Array(Math.max(end, memory.length * 2));
        grown.set(memory);
        memory = grown;
      }
    },
    floats: () => memory,
    gemm(x, ldx, w, ldw, y, ldy, rows, cols, depth, subtract): void {
      const m = memory;
      for (let k0 = 0; k0 < depth; k0 += DEPTH_SLICE) {
        const slice = Math.min(DEPTH_SLICE, depth - k0);
        for (let r = 0; r < rows; r += 1) {
          for (let c = 0; c < cols; c += 1) {
            const sum = dot(m, x + r * ldx + k0, w + c * ldw + k0, slice);
            const at = y + r * ldy + c;
            m[at] = subtract ? (m[at] as number) - sum : (m[at] as number) + sum;
          }
        }
      }
    },
    choleskyPanel(a, lda, j0, width, n): number {
      const m = memory;
      for (let j = j0; j < j0 + width; j += 1) {
        const rowJ = a + j * lda;
        const diagonal = fround((m[rowJ + j] as number) - dot(m, rowJ + j0, rowJ + j0, j - j0));
        if (!(diagonal > 0)) return j;
        const pivot = fround(Math.sqrt(diagonal));
        m[rowJ + j] = pivot;
        for (let i = j + 1; i < n; i += 1) {
          const rowI = a + i * lda;
          m[rowI + j] = fround((m[rowI + j] as number) - dot(m, rowI + j0, rowJ + j0, j - j0)) / pivot;
        }
      }
      return -1;
    },
  };
}
