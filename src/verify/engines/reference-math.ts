/**
 * The scalar mathematics of the reference forward pass: erf and the two GELU forms, LayerNorm, the rotary
 * tables, and log-softmax over a vocabulary row. Everything is computed in double and stored to float32,
 * so each step is at least as accurate as PyTorch's float32 kernels that transformers'
 * modeling_gpt_neox.py runs (the reference logits come from those).
 */

const fround = Math.fround;

// fdlibm s_erf.c (Sun Microsystems, 1993; the erf of FreeBSD msun, musl and V8's ieee754 port): rational
// approximations on [0, 0.84375), [0.84375, 1.25), [1.25, 1/0.35) and [1/0.35, 6), each with error below
// 2^-57 relative. JavaScript has no Math.erf, and the exact GELU ("gelu" in transformers' ACT2FN, i.e.
// torch.nn.functional.gelu) needs erf accurate to float32 for our logits to match PyTorch's within 1e-4.
// The constants are fdlibm's, written as the shortest decimals of the same doubles.
const ERX = 0.8450629115104675;
const EFX = 0.1283791670955126;
const PP0 = 0.12837916709551256;
const PP1 = -0.3250421072470015;
const PP2 = -0.02848174957559851;
const PP3 = -0.005770270296489442;
const PP4 = -0.000023763016656650163;
const QQ1 = 0.39791722395915535;
const QQ2 = 0.0650222499887673;
const QQ3 = 0.005081306281875766;
const QQ4 = 0.00013249473800432164;
const QQ5 = -0.000003960228278775368;
const PA0 = -0.0023621185607526594;
const PA1 = 0.41485611868374833;
const PA2 = -0.3722078760357013;
const PA3 = 0.31834661990116175;
const PA4 = -0.11089469428239668;
const PA5 = 0.035478304325618236;
const PA6 = -0.002166375594868791;
const QA1 = 0.10642088040084423;
const QA2 = 0.540397917702171;
const QA3 = 0.07182865441419627;
const QA4 = 0.12617121980876164;
const QA5 = 0.01363708391202905;
const QA6 = 0.011984499846799107;
const RA0 = -0.009864944034847148;
const RA1 = -0.6938585727071818;
const RA2 = -10.558626225323291;
const RA3 = -62.375332450326006;
const RA4 = -162.39666946257347;
const RA5 = -184.60509290671104;
const RA6 = -81.2874355063066;
const RA7 = -9.814329344169145;
const SA1 = 19.651271667439257;
const SA2 = 137.65775414351904;
const SA3 = 434.56587747522923;
const SA4 = 645.3872717332679;
const SA5 = 429.00814002756783;
const SA6 = 108.63500554177944;
const SA7 = 6.570249770319282;
const SA8 = -0.0604244152148581;
const RB0 = -0.0098649429247001;
const RB1 = -0.799283237680523;
const RB2 = -17.757954917754752;
const RB3 = -160.63638485582192;
const RB4 = -637.5664433683896;
const RB5 = -1025.0951316110772;
const RB6 = -483.5191916086514;
const SB1 = 30.33806074348246;
const SB2 = 325.7925129965739;
const SB3 = 1536.729586084437;
const SB4 = 3199.8582195085955;
const SB5 = 2553.0504064331644;
const SB6 = 474.52854120695537;
const SB7 = -22.44095244658582;

/**
 * The error function, to within an ulp or two of double precision (fdlibm's algorithm; the polynomials
 * written out in Horner form as fdlibm does, which V8 compiles to straight-line code — GELU calls this
 * for every MLP activation).
 */
export function erf(x: number): number {
  if (Number.isNaN(x)) return x;
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  if (a < 0.84375) {
    if (a < 2 ** -28) return x + EFX * x;
    const z = x * x;
    const r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
    const s = 1 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
    return x + x * (r / s);
  }
  if (a < 1.25) {
    const s = a - 1;
    const p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
    const q = 1 + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
    return sign * (ERX + p / q);
  }
  if (a >= 6) return sign;
  const s = 1 / (a * a);
  let ratio: number;
  if (a < 1 / 0.35) {
    const r = RA0 + s * (RA1 + s * (RA2 + s * (RA3 + s * (RA4 + s * (RA5 + s * (RA6 + s * RA7))))));
    const q = 1 + s * (SA1 + s * (SA2 + s * (SA3 + s * (SA4 + s * (SA5 + s * (SA6 + s * (SA7 + s * SA8)))))));
    ratio = r / q;
  } else {
    const r = RB0 + s * (RB1 + s * (RB2 + s * (RB3 + s * (RB4 + s * (RB5 + s * RB6)))));
    const q = 1 + s * (SB1 + s * (SB2 + s * (SB3 + s * (SB4 + s * (SB5 + s * (SB6 + s * SB7))))));
    ratio = r / q;
  }
  // erfc(a) = exp(−a² − 0.5625 + R/S) / a. fdlibm splits −a² into an exact head and a tail over two
  // exps to keep erfc's own relative error at an ulp; for erf = 1 − erfc with erfc < 0.08 the one-exp
  // form's error (≤ a²·2^-53 relative in erfc) stays below 1e-15 absolute, and Math.exp is the slow part.
  const erfc = Math.exp(-a * a - 0.5625 + ratio) / a;
  return sign * (1 - erfc);
}

const SQRT_HALF = Math.SQRT1_2;
const SQRT_TWO_OVER_PI = Math.sqrt(2 / Math.PI);

/** The exact GELU, x·Φ(x) = x/2·(1 + erf(x/√2)) (torch.nn.functional.gelu, approximate='none'). */
export function geluErf(x: number): number {
  return 0.5 * x * (1 + erf(x * SQRT_HALF));
}

/**
 * The tanh GELU, x/2·(1 + tanh(√(2/π)·(x + 0.044715·x³))): transformers' NewGELUActivation ("gelu_new"),
 * FastGELUActivation ("gelu_fast") and PytorchGELUTanh ("gelu_pytorch_tanh") all compute this formula.
 */
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(SQRT_TWO_OVER_PI * (x + 0.044715 * x * x * x)));
}

/** Applies the activation in place to `count` consecutive elements from `offset`. */
export function applyGelu(values: Float32Array, offset: number, count: number, form: 'gelu-erf' | 'gelu-tanh'): void {
  const end = offset + count;
  if (form === 'gelu-erf') {
    for (let i = offset; i < end; i += 1) values[i] = geluErf(values[i] as number);
  } else {
    for (let i = offset; i < end; i += 1) values[i] = geluTanh(values[i] as number);
  }
}

/**
 * torch.nn.LayerNorm over one row: (x − mean)/√(var + eps)·weight + bias with the biased variance.
 * Mean and variance are taken in double, two-pass.
 */
export function layerNormRow(
  source: Float32Array,
  sourceOffset: number,
  target: Float32Array,
  targetOffset: number,
  size: number,
  weight: Float32Array,
  weightOffset: number,
  bias: Float32Array,
  biasOffset: number,
  eps: number,
): void {
  let sum = 0;
  for (let i = 0; i < size; i += 1) sum += source[sourceOffset + i] as number;
  const mean = sum / size;
  let squares = 0;
  for (let i = 0; i < size; i += 1) {
    const centred = (source[sourceOffset + i] as number) - mean;
    squares += centred * centred;
  }
  const inverse = 1 / Math.sqrt(squares / size + eps);
  for (let i = 0; i < size; i += 1) {
    const normalised = ((source[sourceOffset + i] as number) - mean) * inverse;
    target[targetOffset + i] = normalised * (weight[weightOffset + i] as number) + (bias[biasOffset + i] as number);
  }
}


/**
 * NeoX rotate-half rope, in place, on the first rotaryDims of one head's vector at `offset`:
 * x·cos + rotate_half(x)·sin with rotate_half(x1, x2) = (−x2, x1) (modeling_gpt_neox.py apply_rotary_pos_emb).
 */
export function applyRotary(values: Float32Array, offset: number, rotaryDims: number, cos: Float32Array, sin: Float32Array, tableOffset: number): void {
  const half = rotaryDims / 2;
  for (let i = 0; i < half; i += 1) {
    const first = values[offset + i] as number;
    const second = values[offset + half + i] as number;
    const c = cos[tableOffset + i] as number;
    const s = sin[tableOffset + i] as number;
    values[offset + i] = fround(first * c) - fround(second * s);
    values[offset + half + i] = fround(second * c) + fround(first * s);
  }
}

/**
 * The maximum of a row and its first index (torch.argmax's tie rule). NaN if the row holds a NaN, so a
 * broken model cannot score as if the NaN were absent.
 */
export function rowMaximum(values: Float32Array, offset: number, size: number): { max: number; argmax: number } {
  let max = Number.NEGATIVE_INFINITY;
  let argmax = 0;
  let sawNaN = false;
  for (let i = 0; i < size; i += 1) {
    const value = values[offset + i] as number;
    if (value > max) {
      max = value;
      argmax = i;
    } else if (Number.isNaN(value)) {
      sawNaN = true;
    }
  }
  return { max: sawNaN ? Number.NaN : max, argmax };
}

/**
 * The k most probable ids of a row (most probable first; ties to the lower id) with their log-probabilities
 * written at `outOffset`; returns the log of the probability mass outside them, summed directly over the
 * other ids (not 1 − kept, which cancels when the top k hold nearly everything). A bounded min-heap:
 * O(V log k). `kept` is scratch of at least `size` bytes, all zero, and is left all zero.
 */
export function topKOfRow(
  logits: Float32Array,
  offset: number,
  size: number,
  k: number,
  logSumExp: number,
  ids: Int32Array,
  logProbs: Float32Array,
  outOffset: number,
  kept: Uint8Array,
): number {
  const count = Math.min(k, size);
  // heap[0] is the weakest kept entry: lowest logit, and among equals the highest id.
  const heapIds = new Int32Array(count);
  const heapValues = new Float64Array(count);
  let filled = 0;
  const weaker = (a: number, b: number): boolean =>
    (heapValues[a] as number) < (heapValues[b] as number) ||
    ((heapValues[a] as number) === (heapValues[b] as number) && (heapIds[a] as number) > (heapIds[b] as number));
  const swap = (a: number, b: number): void => {
    const id = heapIds[a] as number;
    const value = heapValues[a] as number;
    heapIds[a] = heapIds[b] as number;
    heapValues[a] = heapValues[b] as number;
    heapIds[b] = id;
    heapValues[b] = value;
  };
  const siftDown = (start: number): void => {
    let node = start;
    for (;;) {
      const left = 2 * node + 1;
      const right = left + 1;
      let weakest = node;
      if (left < filled && weaker(left, weakest)) weakest = left;
      if (right < filled && weaker(right, weakest)) weakest = right;
      if (weakest === node) return;
      swap(node, weakest);
      node = weakest;
    }
  };
  for (let id = 0; id < size; id += 1) {
    const value = logits[offset + id] as number;
    if (filled < count) {
      heapIds[filled] = id;
      heapValues[filled] = value;
      filled += 1;
      let node = filled - 1;
      while (node > 0) {
        const parent = (node - 1) >> 1;
        if (!weaker(node, parent)) break;
        swap(node, parent);
        node = parent;
      }
    } else if (count > 0 && value > (heapValues[0] as number)) {
      // Equal logits keep the earlier (lower) id already in the heap.
      heapIds[0] = id;
      heapValues[0] = value;
      siftDown(0);
    }
  }
  // Pop weakest-first into the output from the back, so the output runs strongest-first.
  for (let slot = filled - 1; slot >= 0; slot -= 1) {
    const id = heapIds[0] as number;
    ids[outOffset + slot] = id;
    logProbs[outOffset + slot] = (heapValues[0] as number) - logSumExp;
    kept[id] = 1;
    filled -= 1;
    if (filled > 0) {
      heapIds[0] = heapIds[filled] as number;
      heapValues[0] = heapValues[filled] as number;
      siftDown(0);
    }
  }
  let rest = 0;
  for (let id = 0; id < size; id += 1) {
    if (kept[id] === 0) rest += Math.exp((logits[offset + id] as number) - logSumExp);
  }
  for (let slot = 0; slot < count; slot += 1) kept[ids[outOffset + slot] as number] = 0;
  return Math.log(rest);
}
