/**
 * `convert --to gguf --type q4_k_m --calibrate TEXT --optimize` (GPTQ for the GGUF K-quants, issue #13
 * item 4): what it buys and what it costs. Prints Markdown for BENCHMARKS.md.
 *
 *   npx tsx bench/optimize.ts [--part fidelity,kernels,synth13] [--model DIR] [--calibrate train.txt]
 *                             [--text valid.txt] [--chunks N] [--threads 2] [--variants a,b,…]
 *                             [--synth DIR] [--windows N]
 *
 * fidelity (polyglot-ko-tiny): q4_k_m without an imatrix, with ours (`--calibrate`), llama-quantize
 *   --imatrix on our f16 GGUF with our imatrix file (its bytes are compared with ours), and `--optimize`
 *   (and its ablations), each verified in llama.cpp against the HF folder in the reference engine on
 *   held-out text; file sizes; the wall time of each step. Calibration on --calibrate only.
 * kernels: polyglot-ko-1.3b's matrix shapes (K = 2048 and 8192) with a synthetic SPD Hessian (the
 *   reference engine cannot collect 1.3b's): factorization, GPTQ rows per second on 1 and 2 pool threads
 *   (and whether their bytes agree), round-to-nearest for scale.
 * synth13: a whole synth polyglot-ko-1.3b (`polyquant synth`, made in --synth DIR when missing) to q4_k_m,
 *   plain against --optimize with synthetic Hessians (one per K, shared, each tensor factored on its own
 *   as a real run would): the cost of --optimize relative to plain conversion.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { computeHessians, type HessianEntry, hessianImatrix } from '../src/calibrate/hessian.js';
import { computeImatrix, importanceOf } from '../src/calibrate/imatrix.js';
import { writeImatrixGguf } from '../src/calibrate/imatrix-file.js';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { readGgufHeader } from '../src/converters/gguf/format.js';
import { quantizeRows } from '../src/quant/api.js';
import { gptqFactor } from '../src/quant/gptq.js';
import { QuantPool } from '../src/quant/pool.js';
import { verify } from '../src/verify/verify.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const root = resolve(import.meta.dirname, '..');
const shared = resolve(root, '..', 'shared');
const parts = argument('part', 'fidelity,kernels').split(',');
const model = resolve(argument('model', join(shared, 'fixtures', 'polyglot-ko-tiny')));
const calibrationText = resolve(argument('calibrate', join(shared, 'data', 'korean-text', 'train.txt')));
const text = resolve(argument('text', join(shared, 'data', 'korean-text', 'valid.txt')));
const chunksArgument = argument('chunks', '');
const chunks = chunksArgument === '' ? undefined : Number(chunksArgument);
const threads = Number(argument('threads', '2'));
const windowsArgument = argument('windows', '');
const variantNames = argument('variants', 'none,imatrix,llama-quantize,optimize,optimize-no-head,optimize-damp-0.1').split(',');
const synthDir = resolve(argument('synth', join(root, 'bench', 'out', 'synth-polyglot-ko-1.3b')));
const bin = join(root, 'vendor-build', 'llama.cpp', 'build', 'bin');
const llamaQuantize = join(bin, 'llama-quantize');
const scratch = mkdtempSync(join(tmpdir(), 'polyquant-bench-optimize-'));
const load = (): string => loadavg()[0]?.toFixed(1) ?? '?';
const seconds = (since: number): number => (performance.now() - since) / 1000;

console.log(`${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, ${new Date().toISOString().slice(0, 16)} UTC, Node ${process.version}, ${threads} threads`);
console.log('');

async function tensorBytes(file: string): Promise<number> {
  const bytes = readFileSync(file);
  return (await readGgufHeader(file, bytes.length, async (n) => bytes.subarray(0, n))).tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
}

async function dataSection(file: string): Promise<Uint8Array> {
  const bytes = readFileSync(file);
  const header = await readGgufHeader(file, bytes.length, async (n) => bytes.subarray(0, n));
  return bytes.subarray(header.dataStart);
}

// ------------------------------------------------------------------------------------------ fidelity

async function fidelity(): Promise<void> {
  const started = performance.now();
  const hessians = await computeHessians(model, { texts: [calibrationText], threads, head: true, ...(chunks !== undefined && { chunks }) });
  const hessianSeconds = seconds(started);
  let at = performance.now();
  const imatrixResult = await computeImatrix(model, { texts: [calibrationText], threads, ...(chunks !== undefined && { chunks }) });
  const imatrixSeconds = seconds(at);
  const imatrix = importanceOf(imatrixResult);
  const imatrixFile = join(scratch, 'calibration.imatrix.gguf'); // not a variant's name: `imatrix` writes imatrix.gguf
  await writeImatrixGguf(imatrixFile, imatrixResult);
  const diagonal = importanceOf({ entries: hessianImatrix(hessians) });
  let sameDiagonal = true;
  for (const [name, values] of imatrix) if (!(diagonal.get(name) ?? new Float32Array()).every((value, i) => value === values[i])) sameDiagonal = false;
  console.log(
    `calibration: ${calibrationText.split('/').pop()}, ${hessians.chunkCount} chunks × ${hessians.chunkSize} tokens; Hessians (head included) ${hessianSeconds.toFixed(1)} s, imatrix alone ${imatrixSeconds.toFixed(1)} s; the Hessians' diagonals ${sameDiagonal ? 'equal' : 'differ from'} the imatrix`,
  );
  console.log('');
  const provenance = { file: 'polyquant convert --calibrate', datasets: imatrixResult.datasets, chunkCount: imatrixResult.chunkCount, entries: imatrix.size };
  const withoutHead = new Map([...hessians.entries].filter(([name]) => name !== 'embed_out.weight'));

  interface Variant {
    readonly label: string;
    readonly make: (out: string) => Promise<void>;
  }
  const variants: Record<string, Variant> = {
    none: { label: 'none', make: async (out) => void (await convertToGguf(model, { type: 'q4_k_m', out, workers: threads })) },
    imatrix: {
      label: 'imatrix (ours, `--calibrate`)',
      make: async (out) => void (await convertToGguf(model, { type: 'q4_k_m', out, workers: threads, imatrix, imatrixProvenance: provenance })),
    },
    'llama-quantize': {
      label: 'llama-quantize --imatrix (our f16 GGUF, our imatrix file)',
      make: async (out) => {
        const f16 = join(scratch, 'f16.gguf');
        if (!existsSync(f16)) await convertToGguf(model, { type: 'f16', out: f16, workers: threads });
        const run = spawnSync(llamaQuantize, ['--imatrix', imatrixFile, f16, out, 'Q4_K_M', String(threads)], { encoding: 'utf8', maxBuffer: 64 << 20 });
        if (run.status !== 0) throw new Error(`llama-quantize failed: ${run.stderr}`);
      },
    },
    optimize: {
      label: '**`--optimize`** (GPTQ, head included)',
      make: async (out) => void (await convertToGguf(model, { type: 'q4_k_m', out, workers: threads, imatrix: diagonal, imatrixProvenance: provenance, hessians: hessians.entries })),
    },
    'optimize-no-head': {
      label: '`--optimize`, output head round-to-nearest',
      make: async (out) => void (await convertToGguf(model, { type: 'q4_k_m', out, workers: threads, imatrix: diagonal, imatrixProvenance: provenance, hessians: withoutHead })),
    },
    'optimize-damp-0.1': {
      label: '`--optimize`, dampening 0.1',
      make: async (out) =>
        void (await convertToGguf(model, { type: 'q4_k_m', out, workers: threads, imatrix: diagonal, imatrixProvenance: provenance, hessians: hessians.entries, dampening: 0.1 })),
    },
  };
  const rows: string[] = [];
  let baselinePpl = 0;
  let scored = 0;
  const files = new Map<string, string>();
  for (const name of variantNames) {
    const variant = variants[name];
    if (variant === undefined) throw new Error(`unknown variant ${name}; choose from ${Object.keys(variants).join(', ')}`);
    if (name === 'llama-quantize' && !existsSync(llamaQuantize)) {
      console.error('no llama-quantize (bench/build-llama.sh): skipped');
      continue;
    }
    const out = join(scratch, `${name}.gguf`);
    at = performance.now();
    await variant.make(out);
    const convertSeconds = seconds(at);
    files.set(name, out);
    at = performance.now();
    const report = await verify({ candidate: out, baseline: model, pplFiles: [text], threads, device: 'cpu', ...(windowsArgument !== '' && { maxWindows: Number(windowsArgument) }) });
    const section = report.perplexity[0];
    if (section === undefined) throw new Error('no perplexity section');
    baselinePpl = section.baseline.ppl;
    scored = section.comparison.positions;
    rows.push(
      `| ${variant.label} | ${statSync(out).size.toLocaleString('en')} B (${(await tensorBytes(out)).toLocaleString('en')} of tensors) | ${section.candidate.ppl.toFixed(3)} | ${section.comparison.delta_ppl_pct >= 0 ? '+' : ''}${section.comparison.delta_ppl_pct.toFixed(3)}% | ${(section.comparison.kld?.mean ?? Number.NaN).toExponential(3)} | ${(100 * section.comparison.top1_agreement).toFixed(2)}% | ${convertSeconds.toFixed(1)} s |`,
    );
    console.error(`${name}: done (verify ${seconds(at).toFixed(0)} s, load ${load()})`);
  }
  console.log(
    `q4_k_m on ${model.split('/').pop()}, verified on ${text.split('/').pop()} (windows protocol, ctx 512${windowsArgument !== '' ? `, first ${windowsArgument} windows` : ''}, ${scored} scored tokens), candidates in llama.cpp, baseline the HF folder in the reference engine (PPL ${baselinePpl.toFixed(3)}); "convert" is the conversion alone (calibration above)`,
  );
  console.log('');
  console.log('| q4_k_m | file size | PPL | ΔPPL | mean KLD | top-1 | convert |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const row of rows) console.log(row);
  const ours = files.get('imatrix');
  const theirs = files.get('llama-quantize');
  if (ours !== undefined && theirs !== undefined) {
    const same = Buffer.compare(await dataSection(ours), await dataSection(theirs)) === 0;
    console.log('');
    console.log(`llama-quantize --imatrix (our imatrix file) and ours: tensor data ${same ? 'byte-identical' : 'DIFFERENT'}`);
  }
  console.log('');
}

// ------------------------------------------------------------------------------------------- kernels

/** An SPD K × K Hessian shaped like activations: AR(1) correlations 0.9^|i−j| and column scales over a decade. */
function syntheticHessian(K: number): Float64Array {
  const H = new Float64Array(K * K);
  const scale = Float64Array.from({ length: K }, (_, i) => 0.3 + ((i * 7919) % 97) / 32);
  for (let i = 0; i < K; i += 1) {
    const row = i * K;
    for (let j = 0; j < K; j += 1) H[row + j] = 0.9 ** Math.abs(i - j) * (scale[i] as number) * (scale[j] as number);
  }
  return H;
}

function syntheticRows(count: number, K: number): Float32Array {
  let seed = 12345;
  const next = (): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 4294967296 - 0.5;
  };
  return Float32Array.from({ length: count * K }, () => 0.04 * (next() + next() + next()));
}

async function kernels(): Promise<void> {
  console.log('| matrix (rows × K) | factor | GPTQ Q4_K, 1 thread | GPTQ Q4_K, 2 threads | bytes 1 = 2 threads | RTN Q4_K (1 thread) | load |');
  console.log('|---|---:|---:|---:|---|---:|---|');
  for (const [label, rows, K] of [
    ['attn_qkv / ffn_up (K = 2048)', 512, 2048],
    ['ffn_down (K = 8192)', 128, 8192],
  ] as const) {
    const before = load();
    const H = syntheticHessian(K);
    let at = performance.now();
    const factor = gptqFactor(H, K);
    const factorSeconds = seconds(at);
    const weights = syntheticRows(rows, K);
    const outputs: Uint8Array[] = [];
    const rates: number[] = [];
    for (const workers of [1, 2]) {
      const pool = new QuantPool({ workers });
      try {
        // One warm-up chunk per thread: each copies the factor into its kernel memory once per matrix.
        const chunks = (): Float32Array[] => Array.from({ length: rows / 64 }, (_, i) => weights.slice(i * 64 * K, (i + 1) * 64 * K));
        for await (const _ of pool.quantizeStream({ scheme: 'Q4_K', nPerRow: K, gptq: factor }, chunks().slice(0, 2 * workers))) void _;
        at = performance.now();
        const parts: Uint8Array[] = [];
        for await (const bytes of pool.quantizeStream({ scheme: 'Q4_K', nPerRow: K, gptq: factor }, chunks())) parts.push(bytes.slice());
        rates.push(rows / seconds(at));
        outputs.push(Buffer.concat(parts));
      } finally {
        await pool.close();
      }
    }
    at = performance.now();
    quantizeRows('Q4_K', weights, K, { importance: Float32Array.from(factor.importance) });
    const rtnRate = rows / seconds(at);
    const same = outputs.length === 2 && Buffer.compare(outputs[0] as Uint8Array, outputs[1] as Uint8Array) === 0;
    const fma = (K * K) / 2;
    console.log(
      `| ${label}: ${rows} × ${K} | ${factorSeconds.toFixed(2)} s (${((K ** 3 / 6 / factorSeconds) / 1e9).toFixed(1)} G mul-add/s) | ${(rates[0] as number).toFixed(0)} rows/s (${(((rates[0] as number) * fma) / 1e9).toFixed(1)} G/s) | ${(rates[1] as number).toFixed(0)} rows/s | ${same ? 'yes' : 'NO'} | ${rtnRate.toFixed(0)} rows/s | ${before} → ${load()} |`,
    );
  }
  console.log('');
}

// ------------------------------------------------------------------------------------------- synth13

async function synth13(): Promise<void> {
  if (!existsSync(join(synthDir, 'config.json'))) {
    mkdirSync(synthDir, { recursive: true });
    const run = spawnSync('npx', ['tsx', join(root, 'src', 'cli', 'bin.ts'), 'synth', '--preset', 'polyglot-ko-1.3b', '--out', synthDir, '--force'], { stdio: 'inherit' });
    if (run.status !== 0) throw new Error('synth failed');
  }
  const config = JSON.parse(readFileSync(join(synthDir, 'config.json'), 'utf8')) as { hidden_size: number; intermediate_size: number; num_hidden_layers: number };
  const { hidden_size: hidden, intermediate_size: intermediate, num_hidden_layers: layers } = config;
  const small = { columns: hidden, matrix: syntheticHessian(hidden) };
  const large = { columns: intermediate, matrix: syntheticHessian(intermediate) };
  const hessians = new Map<string, Pick<HessianEntry, 'columns' | 'matrix'>>();
  for (let layer = 0; layer < layers; layer += 1) {
    const prefix = `gpt_neox.layers.${layer}`;
    hessians.set(`${prefix}.attention.query_key_value.weight`, small);
    hessians.set(`${prefix}.attention.dense.weight`, small);
    hessians.set(`${prefix}.mlp.dense_h_to_4h.weight`, small);
    hessians.set(`${prefix}.mlp.dense_4h_to_h.weight`, large);
  }
  hessians.set('embed_out.weight', small);
  const out = join(scratch, 'synth13.gguf');
  const before = load();
  let at = performance.now();
  await convertToGguf(synthDir, { type: 'q4_k_m', out, workers: threads });
  const plain = seconds(at);
  const plainSize = statSync(out).size;
  const middle = load();
  at = performance.now();
  await convertToGguf(synthDir, { type: 'q4_k_m', out, workers: threads, hessians });
  const optimized = seconds(at);
  console.log('| synth polyglot-ko-1.3b → q4_k_m | wall | × plain | file | load |');
  console.log('|---|---:|---:|---:|---|');
  console.log(`| plain | ${plain.toFixed(1)} s | 1 | ${plainSize.toLocaleString('en')} B | ${before} → ${middle} |`);
  console.log(`| --optimize (${hessians.size} Hessians, synthetic) | ${optimized.toFixed(1)} s | ${(optimized / plain).toFixed(1)} | ${statSync(out).size.toLocaleString('en')} B | ${middle} → ${load()} |`);
  console.log('');
}

try {
  if (parts.includes('fidelity')) await fidelity();
  if (parts.includes('kernels')) await kernels();
  if (parts.includes('synth13')) await synth13();
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
