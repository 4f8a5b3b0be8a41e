/**
 * WGSL source for every kernel of the GPT-NeoX forward pass, generated per weight layout and variant.
 * All arithmetic is float32 (no `enable f16;`): f16 weights and scales are read as u32 pairs through
 * `unpack2x16float`, so every kernel runs on adapters without shader-f16 (SwiftShader, most software
 * adapters) and gives the same numbers on those that have it.
 *
 * Two families, chosen per adapter (model.ts):
 * - `software` kernels never touch workgroup memory or barriers: SwiftShader runs a barrier 10–100× slower
 *   than the same work without one (specs/webgpu.md §5.3). Each invocation owns a register tile (up to 8 tokens ×
 *   4 output columns for matrices, one row for LayerNorm) and reads its operands with vec4 loads.
 * - `hardware` kernels add the two that need cooperation to use a GPU well: a split-K GEMV for one token
 *   (a workgroup per 4 output columns, threads reading consecutive words of a row, a tree reduction in
 *   workgroup memory) and a workgroup-per-row LayerNorm. Prefill uses the register-tiled kernel on both.
 *
 * Every kernel reads its sizes from a uniform `p` at binding 0 (one 256-byte slot per dispatch in a
 * per-forward arena, see model.ts), so a pipeline serves every shape of its layout.
 *
 * Weight layouts (quant/webgpu-layouts.ts is the byte-level specification and `dequantizeWebGpu` the CPU
 * oracle):
 * - `f32`: row-major `[N, K]` floats (float32 records, bf16 on disk widened at load);
 * - `f16`: row-major `[N, K]` halves, two per u32, element 0 in the low half;
 * - `q4`: MLC int4, 8 levels per word (low nibble first), `ceil(K/32)·4` words per row, value
 *   `(level − 7) · scale[n, k/32]`;
 * - `q8`: polyquant int8, 4 signed levels per word (low byte first), `ceil(K/32)·8` words per row, value
 *   `level · scale[n, k/32]`;
 * with scales in `f16` (u32 pairs) or `f32`.
 * The dequantized weight is `(level − offset)` times the scale in float32, which is `dequantizeWebGpu` of the
 * same levels with float32 scales: for q4f16_1 that skips MLC's rounding of the product to fp16 (MLC's own
 * f16 kernels round there; ours keep the float32 product, never less accurate).
 */

export type WeightFormat = 'f32' | 'f16' | 'q4' | 'q8';
export type ScaleFormat = 'f16' | 'f32';
export type KernelFamily = 'software' | 'hardware';
export type Activation = 'gelu-erf' | 'gelu-tanh';

/**
 * What happens to each output `acc` (the dot product) of a matmul:
 * - `store`: y = acc (+ bias)
 * - `gelu`: y = act(acc + bias)
 * - `add`: y = (acc + bias) + r[t, n]  (a residual read from another buffer)
 * - `add-accumulate`: y = ((acc + bias) + r[t, n]) + y[t, n]  (GPT-NeoX's parallel residual:
 *   mlp + attention, then + the residual stream, in float32 in that order as transformers adds them)
 */
export type Epilogue = 'store' | 'gelu' | 'add' | 'add-accumulate';

export interface MatmulVariant {
  readonly weight: WeightFormat;
  /** For q4 / q8. */
  readonly scale: ScaleFormat | undefined;
  /**
   * `tile`: each invocation computes `tileRows` tokens × 4 columns over all of K; `split`: one workgroup of
   * `workgroupSize` threads per 4 columns of one token, K split across threads (hardware GEMV).
   */
  readonly kind: 'tile' | 'split';
  /** Tokens per invocation for `tile`: 8 or 4 for prefill, 1 for a single token. */
  readonly tileRows: 1 | 4 | 8;
  /** K % 8 == 0: whole 8-element chunks with vec4 loads; otherwise per-element loads (any K). */
  readonly vector: boolean;
  readonly bias: boolean;
  readonly epilogue: Epilogue;
  readonly activation: Activation;
  readonly workgroupSize: number;
}

/** Words per row of a quantized weight with K columns (groups of 32, zero-padded at the end). */
export function wordsPerRow(format: 'q4' | 'q8', K: number): number {
  return Math.ceil(K / 32) * (format === 'q4' ? 4 : 8);
}

/** The uniform of a matmul dispatch, in u32 slots (order matches `struct MatmulParams`). */
export interface MatmulParams {
  readonly T: number;
  readonly K: number;
  /** First output column this dispatch writes (its window's first weight row). */
  readonly nStart: number;
  /** Columns (weight rows) in this dispatch's window. */
  readonly nCount: number;
  /** Row stride of y (and of r): the full N. */
  readonly yStride: number;
  readonly groups: number;
  readonly wordsPerRow: number;
}

export function matmulUniform(params: MatmulParams): Uint32Array {
  return Uint32Array.of(params.T, params.K, params.nStart, params.nCount, params.yStride, params.groups, params.wordsPerRow, 0);
}

const MATMUL_PARAMS = `struct Params { T: u32, K: u32, nStart: u32, nCount: u32, yStride: u32, groups: u32, wordsPerRow: u32, pad: u32 }`;

/**
 * Exact GELU without erf (WGSL has none): Φ(x) = ½·erfc(−x/√2) with erfc from Numerical Recipes' `erfcc`
 * (Press et al., §6.2: a Chebyshev fit of erfc(z)·exp(z²) in t = 1/(1 + z/2), fractional error below 1.2e-7
 * for every z ≥ 0). Taking erfc of |x|/√2 keeps the error relative on the side where Φ is small (no
 * cancellation), so |gelu_gpu(x) − gelu(x)| < 2e-7·max(1, |x|) in float32 (test/webgpu-runtime.test.ts
 * measures it against the reference engine's fdlibm erf).
 */
export const GELU_WGSL = /* wgsl */ `
fn erfcPositive(z: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * z);
  let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  return t * exp(-z * z + poly);
}
fn geluErf(x: f32) -> f32 {
  let r = erfcPositive(abs(x) * 0.70710678118654752);
  return select(0.5 * x * r, x * (1.0 - 0.5 * r), x >= 0.0);
}
fn geluTanh(x: f32) -> f32 {
  // tanh(u) = 1 − 2/(exp(2u) + 1), clamped so exp stays finite.
  let u = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -15.0, 15.0);
  return 0.5 * x * (2.0 - 2.0 / (exp(2.0 * u) + 1.0));
}
`;

// ===================================================================================== weight access

function weightBindings(weight: WeightFormat, scale: ScaleFormat | undefined, wBinding: number, sBinding: number, vector = false): string {
  const lines: string[] = [];
  if (weight === 'f32') lines.push(`@group(0) @binding(${wBinding}) var<storage, read> w: array<${vector ? 'vec4<f32>' : 'f32'}>;`);
  else lines.push(`@group(0) @binding(${wBinding}) var<storage, read> w: array<u32>;`);
  if (weight === 'q4' || weight === 'q8') {
    lines.push(`@group(0) @binding(${sBinding}) var<storage, read> sc: array<${scale === 'f32' ? 'f32' : 'u32'}>;`);
  }
  return lines.join('\n');
}

/** `scaleAt(n, g)`: scale of group g of (window-local) row n. */
function scaleFunction(weight: WeightFormat, scale: ScaleFormat | undefined): string {
  if (weight !== 'q4' && weight !== 'q8') return '';
  if (scale === 'f32') return 'fn scaleAt(n: u32, g: u32) -> f32 { return sc[n * p.groups + g]; }';
  return 'fn scaleAt(n: u32, g: u32) -> f32 { let i = n * p.groups + g; return unpack2x16float(sc[i >> 1u])[i & 1u]; }';
}

/** `weightAt(n, k)`: one dequantized element of (window-local) row n; any K. */
function weightAtFunction(weight: WeightFormat): string {
  switch (weight) {
    case 'f32':
      return 'fn weightAt(n: u32, k: u32) -> f32 { return w[n * p.K + k]; }';
    case 'f16':
      return 'fn weightAt(n: u32, k: u32) -> f32 { let i = n * p.K + k; return unpack2x16float(w[i >> 1u])[i & 1u]; }';
    case 'q4':
      return `fn weightAt(n: u32, k: u32) -> f32 {
  let word = w[n * p.wordsPerRow + (k >> 3u)];
  let level = (word >> (4u * (k & 7u))) & 15u;
  return (f32(level) - 7.0) * scaleAt(n, k >> 5u);
}`;
    case 'q8':
      return `fn weightAt(n: u32, k: u32) -> f32 {
  let word = w[n * p.wordsPerRow + (k >> 2u)];
  let level = bitcast<i32>(word << (24u - 8u * (k & 3u))) >> 24u;
  return f32(level) * scaleAt(n, k >> 5u);
}`;
  }
}

/**
 * WGSL statements that set `lo{j}`/`hi{j}` (vec4<f32>) to elements k … k+7 of row `n{j}`, chunk `c` (k = 8c),
 * unscaled for q4/q8 (the group's scale is applied to the partial sum).
 */
function chunkLoad(weight: WeightFormat, j: string): string {
  switch (weight) {
    case 'f32':
      return `let b${j} = n${j} * (p.K / 4u) + 2u * c;
      let lo${j} = w[b${j}];
      let hi${j} = w[b${j} + 1u];`;
    case 'f16':
      return `let b${j} = (n${j} * p.K) / 2u + 4u * c;
      let lo${j} = vec4<f32>(unpack2x16float(w[b${j}]), unpack2x16float(w[b${j} + 1u]));
      let hi${j} = vec4<f32>(unpack2x16float(w[b${j} + 2u]), unpack2x16float(w[b${j} + 3u]));`;
    case 'q4':
      return `let q${j} = vec4<u32>(w[n${j} * p.wordsPerRow + c]);
      let lo${j} = vec4<f32>((q${j} >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) - vec4<f32>(7.0);
      let hi${j} = vec4<f32>((q${j} >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)) - vec4<f32>(7.0);`;
    case 'q8':
      return `let q${j} = n${j} * p.wordsPerRow + 2u * c;
      let lo${j} = vec4<f32>((vec4<i32>(bitcast<i32>(w[q${j}])) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
      let hi${j} = vec4<f32>((vec4<i32>(bitcast<i32>(w[q${j} + 1u])) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));`;
  }
}

const COLUMNS = [0, 1, 2, 3] as const;

function epilogueFunction(variant: MatmulVariant): string {
  const bias = variant.bias ? ' + bias[col]' : '';
  let body: string;
  switch (variant.epilogue) {
    case 'store':
      body = `y[index] = value${bias};`;
      break;
    case 'gelu':
      body = `y[index] = ${variant.activation === 'gelu-erf' ? 'geluErf' : 'geluTanh'}(value${bias});`;
      break;
    case 'add':
      body = `y[index] = (value${bias}) + r[index];`;
      break;
    case 'add-accumulate':
      body = `y[index] = ((value${bias}) + r[index]) + y[index];`;
      break;
  }
  return `fn emit(t: u32, n: u32, value: f32) {
  let col = p.nStart + n;
  let index = t * p.yStride + col;
  ${body}
}`;
}

function matmulBindings(variant: MatmulVariant): string {
  const lines = [
    MATMUL_PARAMS,
    '@group(0) @binding(0) var<uniform> p: Params;',
    `@group(0) @binding(1) var<storage, read> x: array<${variant.vector ? 'vec4<f32>' : 'f32'}>;`,
    weightBindings(variant.weight, variant.scale, 2, 3, variant.vector),
  ];
  if (variant.bias) lines.push('@group(0) @binding(4) var<storage, read> bias: array<f32>;');
  if (variant.epilogue === 'add' || variant.epilogue === 'add-accumulate') lines.push('@group(0) @binding(5) var<storage, read> r: array<f32>;');
  lines.push('@group(0) @binding(6) var<storage, read_write> y: array<f32>;');
  return lines.join('\n');
}

/**
 * `y[t, nStart + n] = epilogue(Σ_k x[t, k] · W[n, k])` for the window's rows n: the register-tiled kernel
 * (`tile`) or the split-K GEMV (`split`, one token).
 *
 * Dispatch (`tile`): x = ceil(ceil(nCount / 4) / workgroupSize), y = ceil(T / tileRows).
 * Dispatch (`split`): x = ceil(nCount / 4).
 */
export function matmulShader(variant: MatmulVariant): string {
  const { weight, scale } = variant;
  const grouped = weight === 'q4' || weight === 'q8';
  const head = [
    matmulBindings(variant),
    scaleFunction(weight, scale),
    variant.vector ? '' : weightAtFunction(weight),
    variant.epilogue === 'gelu' ? GELU_WGSL : '',
    epilogueFunction(variant),
  ].join('\n');
  if (variant.kind === 'split') return `${head}\n${splitBody(variant, grouped)}`;
  return `${head}\n${tileBody(variant, grouped)}`;
}

function tileBody(variant: MatmulVariant, grouped: boolean): string {
  const rows = Array.from({ length: variant.tileRows }, (_, i) => i);
  const clampRows = rows.map((i) => (i === 0 ? 'let t0 = tBase;' : `let t${i} = min(tBase + ${i}u, p.T - 1u);`)).join('\n  ');
  const clampColumns = COLUMNS.map((j) => (j === 0 ? 'let n0 = nBase;' : `let n${j} = min(nBase + ${j}u, p.nCount - 1u);`)).join('\n  ');
  const accumulators = rows.map((i) => `var acc${i} = vec4<f32>(0.0);`).join('\n  ');
  const emit = rows
    .map((i) =>
      COLUMNS.map((j) => {
        const conditions = [i > 0 ? `tBase + ${i}u < p.T` : '', j > 0 ? `nBase + ${j}u < p.nCount` : ''].filter((part) => part !== '');
        const call = `emit(tBase + ${i}u, nBase + ${j}u, acc${i}[${j}]);`;
        return conditions.length === 0 ? call : `if (${conditions.join(' && ')}) { ${call} }`;
      }).join('\n  '),
    )
    .join('\n  ');
  let loop: string;
  if (variant.vector) {
    const xBases = rows.map((i) => `let xb${i} = t${i} * (p.K / 4u);`).join('\n  ');
    const xLoads = rows.map((i) => `let xa${i} = x[xb${i} + 2u * c]; let xh${i} = x[xb${i} + 2u * c + 1u];`).join('\n      ');
    const weights = COLUMNS.map((j) => chunkLoad(variant.weight, String(j))).join('\n      ');
    const dots = (target: string) =>
      rows
        .map((i) => `${target}${i} += vec4<f32>(${COLUMNS.map((j) => `dot(xa${i}, lo${j}) + dot(xh${i}, hi${j})`).join(', ')});`)
        .join('\n      ');
    if (grouped) {
      const partials = rows.map((i) => `var part${i} = vec4<f32>(0.0);`).join('\n    ');
      const scales = `let s = vec4<f32>(${COLUMNS.map((j) => `scaleAt(n${j}, g)`).join(', ')});`;
      const apply = rows.map((i) => `acc${i} += part${i} * s;`).join('\n    ');
      loop = `${xBases}
  let chunks = p.K / 8u;
  for (var g = 0u; g < p.groups; g += 1u) {
    ${scales}
    ${partials}
    let cEnd = min(4u * g + 4u, chunks);
    for (var c = 4u * g; c < cEnd; c += 1u) {
      ${xLoads}
      ${weights}
      ${dots('part')}
    }
    ${apply}
  }`;
    } else {
      loop = `${xBases}
  let chunks = p.K / 8u;
  for (var c = 0u; c < chunks; c += 1u) {
      ${xLoads}
      ${weights}
      ${dots('acc')}
  }`;
    }
  } else {
    const xLoads = rows.map((i) => `let x${i} = x[t${i} * p.K + k];`).join('\n    ');
    const weights = `let wv = vec4<f32>(${COLUMNS.map((j) => `weightAt(n${j}, k)`).join(', ')});`;
    const updates = rows.map((i) => `acc${i} += x${i} * wv;`).join('\n    ');
    loop = `for (var k = 0u; k < p.K; k += 1u) {
    ${xLoads}
    ${weights}
    ${updates}
  }`;
  }
  return `@compute @workgroup_size(${variant.workgroupSize})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let nBase = gid.x * 4u;
  let tBase = gid.y * ${variant.tileRows}u;
  if (nBase >= p.nCount || tBase >= p.T) { return; }
  ${clampRows}
  ${clampColumns}
  ${accumulators}
  ${loop}
  ${emit}
}`;
}

function splitBody(variant: MatmulVariant, grouped: boolean): string {
  const size = variant.workgroupSize;
  const weights = COLUMNS.map((j) => chunkLoad(variant.weight, String(j))).join('\n    ');
  const sums = COLUMNS.map((j) => `dot(xa, lo${j}) + dot(xh, hi${j})`).join(', ');
  const update = grouped
    ? `acc += vec4<f32>(${sums}) * vec4<f32>(${COLUMNS.map((j) => `scaleAt(n${j}, c >> 2u)`).join(', ')});`
    : `acc += vec4<f32>(${sums});`;
  const clampColumns = COLUMNS.map((j) => (j === 0 ? 'let n0 = nBase;' : `let n${j} = min(nBase + ${j}u, p.nCount - 1u);`)).join('\n  ');
  const emit = COLUMNS.map((j) => (j === 0 ? `emit(0u, nBase, total[0]);` : `if (nBase + ${j}u < p.nCount) { emit(0u, nBase + ${j}u, total[${j}]); }`)).join(
    '\n    ',
  );
  return `var<workgroup> partial: array<vec4<f32>, ${size}>;
@compute @workgroup_size(${size})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let nBase = min(wid.x * 4u, p.nCount - 1u);
  ${clampColumns}
  var acc = vec4<f32>(0.0);
  let chunks = p.K / 8u;
  for (var c = lid; c < chunks; c += ${size}u) {
    let xa = x[2u * c];
    let xh = x[2u * c + 1u];
    ${weights}
    ${update}
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = ${size / 2}u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u && wid.x * 4u < p.nCount) {
    let total = partial[0];
    ${emit}
  }
}`;
}

// ===================================================================================== other kernels

/** A flat invocation index over a 2-D grid of `size`-wide workgroups (so dispatches can pass 65535 groups). */
const FLAT_INDEX = (size: number) => `gid.x + gid.y * (nwg.x * ${size}u)`;

/**
 * Embedding gather: `out[t, k] = E[tokens[tokenOffset + t], k]` dequantized, for tokens inside this
 * dispatch's row window [rowStart, rowStart + rowCount) (one dispatch per window).
 * Uniform: T, K, rowStart, rowCount, tokenOffset, groups, wordsPerRow.
 */
export function gatherShader(weight: WeightFormat, scale: ScaleFormat | undefined, workgroupSize: number): string {
  return `struct Params { T: u32, K: u32, rowStart: u32, rowCount: u32, tokenOffset: u32, groups: u32, wordsPerRow: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
${weightBindings(weight, scale, 2, 3)}
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
${scaleFunction(weight, scale)}
${weightAtFunction(weight)}
@compute @workgroup_size(${workgroupSize})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let index = ${FLAT_INDEX(workgroupSize)};
  if (index >= p.T * p.K) { return; }
  let t = index / p.K;
  let k = index - t * p.K;
  let token = tokens[p.tokenOffset + t];
  if (token < p.rowStart || token - p.rowStart >= p.rowCount) { return; }
  y[index] = weightAt(token - p.rowStart, k);
}`;
}

/**
 * torch.nn.LayerNorm over rows of H: `(x − mean) / √(var + eps) · weight + bias`, biased variance, two
 * passes. `software`: one invocation per row (4 partial sums); `hardware`: one workgroup per row.
 * Uniform: rows, H, eps (f32 bits).
 */
export function layerNormShader(family: KernelFamily, workgroupSize: number): string {
  const head = `struct Params { rows: u32, H: u32, eps: f32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;`;
  if (family === 'software') {
    return `${head}
@compute @workgroup_size(${workgroupSize})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.x;
  if (row >= p.rows) { return; }
  let base = row * p.H;
  let H4 = p.H & ~3u;
  var s = vec4<f32>(0.0);
  for (var i = 0u; i < H4; i += 4u) { s += vec4<f32>(x[base + i], x[base + i + 1u], x[base + i + 2u], x[base + i + 3u]); }
  var sum = (s.x + s.y) + (s.z + s.w);
  for (var i = H4; i < p.H; i += 1u) { sum += x[base + i]; }
  let mean = sum / f32(p.H);
  var q = vec4<f32>(0.0);
  for (var i = 0u; i < H4; i += 4u) {
    let d = vec4<f32>(x[base + i], x[base + i + 1u], x[base + i + 2u], x[base + i + 3u]) - vec4<f32>(mean);
    q += d * d;
  }
  var squares = (q.x + q.y) + (q.z + q.w);
  for (var i = H4; i < p.H; i += 1u) { let d = x[base + i] - mean; squares += d * d; }
  let inverse = 1.0 / sqrt(squares / f32(p.H) + p.eps);
  for (var i = 0u; i < p.H; i += 1u) { y[base + i] = ((x[base + i] - mean) * inverse) * gamma[i] + beta[i]; }
}`;
  }
  return `${head}
var<workgroup> partial: array<f32, ${workgroupSize}>;
fn reduce(lid: u32) -> f32 {
  workgroupBarrier();
  for (var stride = ${workgroupSize / 2}u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();
  return total;
}
@compute @workgroup_size(${workgroupSize})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  let base = row * p.H;
  var sum = 0.0;
  for (var i = lid; i < p.H; i += ${workgroupSize}u) { sum += x[base + i]; }
  partial[lid] = sum;
  let mean = reduce(lid) / f32(p.H);
  var squares = 0.0;
  for (var i = lid; i < p.H; i += ${workgroupSize}u) { let d = x[base + i] - mean; squares += d * d; }
  partial[lid] = squares;
  let inverse = 1.0 / sqrt(reduce(lid) / f32(p.H) + p.eps);
  for (var i = lid; i < p.H; i += ${workgroupSize}u) { y[base + i] = ((x[base + i] - mean) * inverse) * gamma[i] + beta[i]; }
}`;
}

/**
 * Rotary embedding on the first `rotary` dimensions of each head of q and k (NeoX rotate-half:
 * x·cos + rotate_half(x)·sin), q rotated in place in the qkv rows, k and v appended to the layer's cache
 * at positions past … past + T − 1. qkv rows are MLC's `[q all heads | k all heads | v all heads]`.
 * cos/sin are `[positions, rotary/2]` tables (arch/gpt-neox.ts rotaryTables, as the reference engine).
 * Uniform: T, past, H, headDim, half (rotary/2), rotary.
 */
export function ropeShader(workgroupSize: number): string {
  return `struct Params { T: u32, past: u32, H: u32, headDim: u32, half: u32, rotary: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> keys: array<f32>;
@group(0) @binding(3) var<storage, read_write> values: array<f32>;
@group(0) @binding(4) var<storage, read> cosTable: array<f32>;
@group(0) @binding(5) var<storage, read> sinTable: array<f32>;
@compute @workgroup_size(${workgroupSize})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let index = ${FLAT_INDEX(workgroupSize)};
  if (index >= p.T * p.H) { return; }
  let t = index / p.H;
  let c = index - t * p.H;
  let i = c % p.headDim;
  let position = p.past + t;
  let row = t * 3u * p.H;
  let cacheRow = position * p.H;
  values[cacheRow + c] = qkv[row + 2u * p.H + c];
  if (i < p.half) {
    let cs = cosTable[position * p.half + i];
    let sn = sinTable[position * p.half + i];
    let q1 = qkv[row + c];
    let q2 = qkv[row + c + p.half];
    qkv[row + c] = q1 * cs - q2 * sn;
    qkv[row + c + p.half] = q2 * cs + q1 * sn;
    let k1 = qkv[row + p.H + c];
    let k2 = qkv[row + p.H + c + p.half];
    keys[cacheRow + c] = k1 * cs - k2 * sn;
    keys[cacheRow + c + p.half] = k2 * cs + k1 * sn;
  } else if (i >= p.rotary) {
    keys[cacheRow + c] = qkv[row + p.H + c];
  }
}`;
}

/**
 * Attention scores, 4 queries × 4 keys per invocation: `scores[h, t, j] = q[t, h] · k[j, h]` (raw dot
 * products over headDim, vec4 loads; headDim % 4 == 0) for keys j ≤ past + t. Uniform: T, past, H,
 * headDim, heads, stride (the cache capacity: a score row's length).
 * Dispatch: x = ceil(ceil((past + T) / 4) / 16), y = ceil(T / 4), z = heads; workgroup 16.
 */
export function scoresShader(): string {
  const rows = [0, 1, 2, 3];
  return `struct Params { T: u32, past: u32, H: u32, headDim: u32, heads: u32, stride: u32, scale: f32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> scores: array<f32>;
@compute @workgroup_size(16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let jBase = gid.x * 4u;
  let tBase = gid.y * 4u;
  let h = gid.z;
  if (tBase >= p.T) { return; }
  let tLast = min(tBase + 3u, p.T - 1u);
  let visible = p.past + tLast + 1u;
  if (jBase >= visible) { return; }
  let H4 = p.H / 4u;
  let d4 = p.headDim / 4u;
  ${rows.map((i) => `let qb${i} = min(tBase + ${i}u, tLast) * 3u * H4 + h * d4;`).join('\n  ')}
  ${rows.map((j) => `let kb${j} = min(jBase + ${j}u, visible - 1u) * H4 + h * d4;`).join('\n  ')}
  ${rows.map((i) => `var s${i} = vec4<f32>(0.0);`).join('\n  ')}
  for (var d = 0u; d < d4; d += 1u) {
    ${rows.map((j) => `let k${j} = keys[kb${j} + d];`).join(' ')}
    ${rows.map((i) => `let q${i} = qkv[qb${i} + d]; s${i} += vec4<f32>(dot(q${i}, k0), dot(q${i}, k1), dot(q${i}, k2), dot(q${i}, k3));`).join('\n    ')}
  }
  ${rows
    .map(
      (i) =>
        `if (tBase + ${i}u < p.T) { let base = (h * p.T + tBase + ${i}u) * p.stride + jBase; ${rows.map((j) => `if (jBase + ${j}u < visible) { scores[base + ${j}u] = s${i}[${j}]; }`).join(' ')} }`,
    )
    .join('\n  ')}
}`;
}

/**
 * Causal softmax of each score row in place: `softmax(score · scale)` over keys 0 … past + t, zeros from there
 * to past + T (so the value product can sum every key of the step). One invocation per (head, query) row.
 * Uniform as scoresShader.
 */
export function softmaxShader(workgroupSize: number): string {
  return `struct Params { T: u32, past: u32, H: u32, headDim: u32, heads: u32, stride: u32, scale: f32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(6) var<storage, read_write> scores: array<f32>;
@compute @workgroup_size(${workgroupSize})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.x;
  if (row >= p.heads * p.T) { return; }
  let t = row % p.T;
  let visible = p.past + t + 1u;
  let base = row * p.stride;
  var maximum = -3.4028234663852886e38;
  for (var j = 0u; j < visible; j += 1u) {
    let scaled = scores[base + j] * p.scale;
    scores[base + j] = scaled;
    maximum = max(maximum, scaled);
  }
  var sum = 0.0;
  for (var j = 0u; j < visible; j += 1u) {
    let e = exp(scores[base + j] - maximum);
    scores[base + j] = e;
    sum += e;
  }
  let inverse = 1.0 / sum;
  for (var j = 0u; j < visible; j += 1u) { scores[base + j] *= inverse; }
  for (var j = visible; j < p.past + p.T; j += 1u) { scores[base + j] = 0.0; }
}`;
}

/**
 * The value product: `context[t, h·headDim + d] = Σ_j probabilities[h, t, j] · v[j, h·headDim + d]`, 4
 * queries × 4 dimensions per invocation. Uniform as scoresShader.
 * Dispatch: x = ceil((H / 4) / 64), y = ceil(T / 4); workgroup 64.
 */
export function valuesShader(): string {
  const rows = [0, 1, 2, 3];
  return `struct Params { T: u32, past: u32, H: u32, headDim: u32, heads: u32, stride: u32, scale: f32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read> values: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> context: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let H4 = p.H / 4u;
  let c = gid.x;
  let tBase = gid.y * 4u;
  if (c >= H4 || tBase >= p.T) { return; }
  let h = (c * 4u) / p.headDim;
  let tLast = min(tBase + 3u, p.T - 1u);
  ${rows.map((i) => `let sb${i} = (h * p.T + min(tBase + ${i}u, tLast)) * p.stride;`).join('\n  ')}
  ${rows.map((i) => `var a${i} = vec4<f32>(0.0);`).join('\n  ')}
  let keys = p.past + tLast + 1u;
  for (var j = 0u; j < keys; j += 1u) {
    let v = values[j * H4 + c];
    ${rows.map((i) => `a${i} += scores[sb${i} + j] * v;`).join(' ')}
  }
  ${rows.map((i) => `if (tBase + ${i}u < p.T) { context[(tBase + ${i}u) * H4 + c] = a${i}; }`).join('\n  ')}
}`;
}
