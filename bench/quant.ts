/**
 * Quantization benchmark (issue: quantization core).
 *  1. Speed: MB/s of f32 input per scheme, polyquant with 1 and 2 workers next to llama-quantize with 1 and
 *     2 threads, measured in the same run on the same rows: both requantize the same F32 GGUF (a one-layer
 *     gptneox model, 42 M normal(0, 0.02) weights) with every 2-D tensor forced to the scheme (`--pure`),
 *     reading and writing files alike. The tensor bytes of both outputs are compared too.
 *  2. Quality: RMSE / SQNR / max error per scheme on normal(0, 0.02) 4096×4096, next to bits per weight.
 *
 *   bash bench/build-llama.sh && npx tsx bench/quant.ts [--quality-only] [--speed-only] [--schemes Q8_0,Q4_0]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import {
  type GgufKV,
  type GgufTensorToWrite,
  readGgufHeader,
  writeGguf,
} from '../src/converters/gguf/format.js';
import { type ReadableFile, SyncFileReader, withFile } from '../src/io/file.js';
import { dequantizeRows, quantizeRows } from '../src/quant/api.js';
import { GGML_TYPES, type GgmlTypeName } from '../src/quant/ggml-types.js';
import { createErrorStats } from '../src/quant/metrics.js';
import { QuantPool } from '../src/quant/pool.js';
import { normalTable, Xorshift32, fillFromTable } from '../src/synth/random.js';

const ROOT = resolve(import.meta.dirname, '..');
const LLAMA_QUANTIZE = join(ROOT, 'vendor-build', 'llama.cpp', 'build', 'bin', 'llama-quantize');
const WORK = '/tmp/polyquant-bench-quant';

/** llama-quantize's ftype name whose default (--pure) type is the scheme (llama-quant.cpp). */
const LLAMA_FTYPE: Partial<Record<GgmlTypeName, string>> = {
  F16: 'F16',
  BF16: 'BF16',
  Q8_0: 'Q8_0',
  Q4_0: 'Q4_0',
  Q4_1: 'Q4_1',
  Q5_0: 'Q5_0',
  Q5_1: 'Q5_1',
  Q2_K: 'Q2_K',
  Q3_K: 'Q3_K_M',
  Q4_K: 'Q4_K_M',
  Q5_K: 'Q5_K_M',
  Q6_K: 'Q6_K',
  IQ4_NL: 'IQ4_NL',
  IQ4_XS: 'IQ4_XS',
};

function argument(name: string): string | undefined {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : undefined;
}

function normal(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  fillFromTable(new Xorshift32(seed), normalTable(0.02), out);
  return out;
}

// ---- the benchmark model: gptneox, one layer, hidden 2048, ffn 4096, vocab 2048 ----------------------
const E = 2048;
const F = 4096;
const V = 2048;

interface BenchTensor {
  name: string;
  shape: number[]; // PyTorch order
}

const TENSORS: BenchTensor[] = [
  { name: 'token_embd.weight', shape: [V, E] },
  { name: 'blk.0.attn_norm.weight', shape: [E] },
  { name: 'blk.0.attn_norm.bias', shape: [E] },
  { name: 'blk.0.attn_qkv.weight', shape: [3 * E, E] },
  { name: 'blk.0.attn_qkv.bias', shape: [3 * E] },
  { name: 'blk.0.attn_output.weight', shape: [E, E] },
  { name: 'blk.0.attn_output.bias', shape: [E] },
  { name: 'blk.0.ffn_norm.weight', shape: [E] },
  { name: 'blk.0.ffn_norm.bias', shape: [E] },
  { name: 'blk.0.ffn_up.weight', shape: [F, E] },
  { name: 'blk.0.ffn_up.bias', shape: [F] },
  { name: 'blk.0.ffn_down.weight', shape: [E, F] },
  { name: 'blk.0.ffn_down.bias', shape: [E] },
  { name: 'output_norm.weight', shape: [E] },
  { name: 'output_norm.bias', shape: [E] },
  { name: 'output.weight', shape: [V, E] },
];

function metadata(fileType: number): GgufKV[] {
  return [
    { key: 'general.architecture', type: 'STRING', value: 'gptneox' },
    { key: 'general.name', type: 'STRING', value: 'polyquant-bench' },
    { key: 'general.file_type', type: 'UINT32', value: fileType },
    { key: 'gptneox.context_length', type: 'UINT32', value: 2048 },
    { key: 'gptneox.embedding_length', type: 'UINT32', value: E },
    { key: 'gptneox.block_count', type: 'UINT32', value: 1 },
    { key: 'gptneox.feed_forward_length', type: 'UINT32', value: F },
    { key: 'gptneox.attention.head_count', type: 'UINT32', value: 16 },
    { key: 'gptneox.rope.dimension_count', type: 'UINT32', value: 64 },
    { key: 'gptneox.attention.layer_norm_epsilon', type: 'FLOAT32', value: 1e-5 },
    { key: 'gptneox.use_parallel_residual', type: 'BOOL', value: true },
    { key: 'tokenizer.ggml.model', type: 'STRING', value: 'gpt2' },
    { key: 'tokenizer.ggml.tokens', type: 'STRING', array: true, value: Array.from({ length: V }, (_, i) => `<t${i}>`) },
    { key: 'tokenizer.ggml.token_type', type: 'INT32', array: true, value: Array.from({ length: V }, () => 1) },
    { key: 'tokenizer.ggml.merges', type: 'STRING', array: true, value: ['< t'] },
  ];
}

const bytesOf = (values: Float32Array): Uint8Array => new Uint8Array(values.buffer, values.byteOffset, values.byteLength);

async function writeInput(path: string): Promise<number> {
  const tensors: GgufTensorToWrite[] = TENSORS.map((tensor, index) => ({
    name: tensor.name,
    type: 'F32',
    ne: [...tensor.shape].reverse(),
    async *chunks() {
      const count = tensor.shape.reduce((a, b) => a * b, 1);
      yield bytesOf(tensor.shape.length === 1 ? Float32Array.from({ length: count }, (_, i) => (i % 2 ? 0.01 : 1)) : normal(count, 1000 + index));
    },
  }));
  const plan = await writeGguf(path, metadata(0), tensors);
  return plan.fileBytes;
}

/** polyquant's requantize: f32 rows from the input file → worker pool → output GGUF, streamed. */
async function polyquantRequantize(input: string, output: string, scheme: GgmlTypeName, pool: QuantPool): Promise<number> {
  const header = await withFile(input, (file) => readGgufHeader(input, file.size, (n) => file.read(0, n)));
  const started = performance.now();
  {
    const reader = SyncFileReader.open(input);
    const tensors: GgufTensorToWrite[] = header.tensors.map((tensor) => {
      const quantize = tensor.ne.length === 2;
      const nPerRow = tensor.ne[0] as number;
      const rows = tensor.bytes / (nPerRow * 4);
      const rowsPerChunk = Math.max(1, Math.floor((1 << 20) / (nPerRow * 4)));
      const chunks = function* (): Iterable<Float32Array> {
        for (let row = 0; row < rows; row += rowsPerChunk) {
          const count = Math.min(rowsPerChunk, rows - row);
          const values = new Float32Array(count * nPerRow);
          reader.readInto(header.dataStart + tensor.offset + row * nPerRow * 4, count * nPerRow * 4, new Uint8Array(values.buffer));
          yield values;
        }
      };
      return {
        name: tensor.name,
        type: quantize ? scheme : 'F32',
        ne: tensor.ne,
        chunks: quantize
          ? () => pool.quantizeStream({ scheme, nPerRow, tensor: tensor.name }, chunks())
          : async function* () {
              for (const values of chunks()) yield bytesOf(values);
            },
      };
    });
    await writeGguf(output, metadata(0), tensors);
    reader.close();
  }
  return (performance.now() - started) / 1000;
}

function llamaRequantize(input: string, output: string, scheme: GgmlTypeName, threads: number): number {
  const started = performance.now();
  const run = spawnSync(LLAMA_QUANTIZE, ['--pure', input, output, LLAMA_FTYPE[scheme] as string, String(threads)], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`llama-quantize ${scheme} failed:\n${run.stderr.slice(-2000)}`);
  return (performance.now() - started) / 1000;
}

async function tensorBytes(path: string): Promise<Map<string, Buffer>> {
  return withFile(path, async (file: ReadableFile) => {
    const header = await readGgufHeader(path, file.size, (n) => file.read(0, n));
    const out = new Map<string, Buffer>();
    for (const tensor of header.tensors) out.set(tensor.name, Buffer.from(await file.read(header.dataStart + tensor.offset, tensor.bytes)));
    return out;
  });
}

async function speed(schemes: GgmlTypeName[]): Promise<string[]> {
  if (!existsSync(LLAMA_QUANTIZE)) throw new Error(`build llama.cpp first: bash bench/build-llama.sh (${LLAMA_QUANTIZE} missing)`);
  mkdirSync(WORK, { recursive: true });
  const input = join(WORK, 'bench-f32.gguf');
  await writeInput(input);
  const f32Bytes = TENSORS.filter((t) => t.shape.length === 2).reduce((sum, t) => sum + t.shape[0]! * t.shape[1]! * 4, 0);
  spawnSync('sh', ['-c', `cat '${input}' > /dev/null`]);
  const rows = ['| scheme | polyquant 1 worker | polyquant 2 workers | llama-quantize 1 thread | llama-quantize 2 threads | ratio 1 | ratio 2 | bytes equal |', '|---|---|---|---|---|---|---|---|'];
  const mb = (seconds: number) => f32Bytes / 1e6 / seconds;
  // Pools live as long as a conversion does; start them (threads, module loading) outside the timings.
  const pools = [new QuantPool({ workers: 1 }), new QuantPool({ workers: 2 })];
  for (const pool of pools) await pool.quantize({ scheme: 'Q8_0', nPerRow: 32 }, new Float32Array(32));
  for (const scheme of schemes) {
    const ours = join(WORK, `ours-${scheme}.gguf`);
    const theirs = join(WORK, `llama-${scheme}.gguf`);
    const t1 = await polyquantRequantize(input, ours, scheme, pools[0] as QuantPool);
    const t2 = await polyquantRequantize(input, ours, scheme, pools[1] as QuantPool);
    const l1 = llamaRequantize(input, theirs, scheme, 1);
    const l2 = llamaRequantize(input, theirs, scheme, 2);
    const a = await tensorBytes(ours);
    const b = await tensorBytes(theirs);
    const quantized = TENSORS.filter((t) => t.shape.length === 2).map((t) => t.name);
    const equal = quantized.every((name) => a.get(name)?.equals(b.get(name) ?? Buffer.alloc(0)) === true);
    rows.push(
      `| ${scheme} | ${mb(t1).toFixed(0)} MB/s | ${mb(t2).toFixed(0)} MB/s | ${mb(l1).toFixed(0)} MB/s | ${mb(l2).toFixed(0)} MB/s | ${(l1 / t1 * 100).toFixed(0)}% | ${(l2 / t2 * 100).toFixed(0)}% | ${equal ? 'yes' : 'NO'} |`,
    );
    process.stderr.write(`${rows.at(-1)}\n`);
    rmSync(ours, { force: true });
    rmSync(theirs, { force: true });
  }
  await Promise.all(pools.map((pool) => pool.close()));
  rmSync(WORK, { recursive: true, force: true });
  return rows;
}

function quality(schemes: GgmlTypeName[]): string[] {
  const n = 4096;
  const data = normal(n * n, 7);
  const rows = ['| scheme | bits/weight | RMSE | max abs error | SQNR dB | cosine |', '|---|---|---|---|---|---|'];
  for (const scheme of schemes) {
    const info = GGML_TYPES[scheme];
    const stats = createErrorStats();
    const rowsPerChunk = 256;
    for (let row = 0; row < n; row += rowsPerChunk) {
      const chunk = data.subarray(row * n, (row + rowsPerChunk) * n);
      stats.add(chunk, dequantizeRows(scheme, quantizeRows(scheme, chunk, n), n));
    }
    const r = stats.result();
    rows.push(
      `| ${scheme} | ${((8 * info.blockBytes) / info.blockElements).toFixed(4)} | ${r.rmse.toExponential(3)} | ${r.maxAbsError.toExponential(3)} | ${r.sqnrDb.toFixed(2)} | ${r.cosineSimilarity.toFixed(6)} |`,
    );
    process.stderr.write(`${rows.at(-1)}\n`);
  }
  return rows;
}

const schemes = (argument('schemes')?.split(',') ?? Object.keys(LLAMA_FTYPE)) as GgmlTypeName[];
process.stdout.write(`machine: ${cpus().length}× ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}; ${new Date().toISOString()}\n\n`);
if (!process.argv.includes('--quality-only')) {
  process.stdout.write(`Speed: MB/s of f32 input (42 M weights), files read and written on both sides\n\n${(await speed(schemes)).join('\n')}\n\n`);
}
if (!process.argv.includes('--speed-only')) {
  process.stdout.write(`Quality on normal(0, 0.02) 4096×4096\n\n${quality(['F16', 'BF16', ...schemes.filter((s) => s !== 'F16' && s !== 'BF16')]).join('\n')}\n`);
}
