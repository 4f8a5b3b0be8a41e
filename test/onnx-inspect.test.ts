/**
 * `polyquant inspect` on ONNX output, and the validating ONNX reader under it (converters/onnx/read.ts).
 *
 * - Inspect: polyglot-ko-tiny from ../shared converted to fp32, q8, q4 and q4f16 (skipped without ../shared).
 * - Reader errors and the fuzz test: the repository's own fixtures/tiny-neox converted to q4 (hermetic); each
 *   malformed model is the real one decoded with onnx-proto, edited in one line and encoded again.
 */
import { statSync, truncateSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToOnnx } from '../src/converters/onnx/convert.js';
import { decodeModel, encodeModel, type ModelProto, type TensorProto } from '../src/converters/onnx/proto.js';
import { checkOnnxExternalData, findOnnxModels, MAX_ONNX_MODEL_BYTES, readOnnxModel, readOnnxModelBytes } from '../src/converters/onnx/read.js';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { inspectPath } from '../src/inspect/index.js';
import type { OnnxInspectModel, OnnxInspectReport, OnnxWeightFormat } from '../src/inspect/onnx.js';
import { parameterCount, readCheckpoint } from '../src/readers/checkpoint.js';
import { runCli } from './helpers/cli.js';
import { expectPolyquantError } from './helpers/errors.js';
import { mulberry32 } from './helpers/safetensors-fixtures.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';
import { toJsonShape } from '../src/io/json-shape.js';

/** Fuzz cases; POLYQUANT_BIG_TESTS=1 runs 20,000. */
const FUZZ_CASES = process.env['POLYQUANT_BIG_TESTS'] === '1' ? 20_000 : 200;

const scratch = tempDir('polyquant-onnx-inspect-');
afterAll(() => scratch.remove());

function model(report: OnnxInspectReport, file: string): OnnxInspectModel {
  const found = report.models.find((entry) => entry.file === file);
  if (found === undefined) throw new Error(`no ${file} in the report (${report.models.map((entry) => entry.file).join(', ')})`);
  return found;
}

function format<K extends OnnxWeightFormat['format']>(entry: OnnxInspectModel, kind: K): Extract<OnnxWeightFormat, { format: K }>[] {
  return entry.formats.filter((item): item is Extract<OnnxWeightFormat, { format: K }> => item.format === kind);
}

describe.skipIf(!HAS_SHARED)('inspect on a converted polyglot-ko-tiny folder', () => {
  let out: string;
  let report: OnnxInspectReport;
  beforeAll(async () => {
    out = join(scratch.path, 'polyglot-tiny-onnx');
    await convertToOnnx(POLYGLOT_TINY_DIR, { types: ['fp32', 'q8', 'q4', 'q4f16'], out, force: true });
    report = (await inspectPath(out)) as OnnxInspectReport;
  });

  it('tells the ONNX folder from an HF folder, though both have a config.json', async () => {
    expect(report.kind).toBe('onnx-folder');
    expect(report.schema).toBe('polyquant.inspect-onnx/2');
    expect((await inspectPath(POLYGLOT_TINY_DIR)).kind).toBe('hf-folder');
    expect(report.config?.hiddenSize).toBe(256);
    expect(report.tokenizer?.model).toBe('BPE');
    expect(report.genai).toEqual({ filename: 'onnx/model_q4.onnx', exists: true });
    expect(report.warnings).toEqual([]);
    expect(report.models.map((entry) => [entry.file, entry.type])).toEqual([
      ['onnx/model.onnx', 'fp32'],
      ['onnx/model_quantized.onnx', 'q8'],
      ['onnx/model_q4.onnx', 'q4'],
      ['onnx/model_q4f16.onnx', 'q4f16'],
    ]);
  });

  it("reports q4's linears as MatMulNBits 4-bit, block 32, accuracy_level 4, symmetric, fp32 scales at 5 bits per weight", () => {
    const q4 = model(report, 'onnx/model_q4.onnx');
    const [nbits, ...others] = format(q4, 'MatMulNBits');
    expect(others).toEqual([]);
    // 4 linears per layer, 4 layers, plus the output head.
    expect(nbits).toMatchObject({ bits: 4, blockSize: 32, accuracyLevel: 4, symmetric: true, scaleType: 'FLOAT', count: 17 });
    expect(nbits?.bitsPerWeight).toBe(5);
    expect(format(q4, 'float').map((entry) => entry.dataType)).toEqual(['FLOAT']);
    expect(q4.opsets).toEqual([
      { domain: 'ai.onnx', version: 21 },
      { domain: 'com.microsoft', version: 1 },
    ]);
    expect(q4.irVersion).toBe(10);
    expect(q4.ops.find((op) => op.opType === 'MatMulNBits')).toEqual({ domain: 'com.microsoft', opType: 'MatMulNBits', count: 17 });
  });

  it('reports q4f16 with fp16 scales at 4.5 bits per weight and fp16 float weights', () => {
    const q4f16 = model(report, 'onnx/model_q4f16.onnx');
    expect(format(q4f16, 'MatMulNBits')).toMatchObject([{ bits: 4, blockSize: 32, scaleType: 'FLOAT16', bitsPerWeight: 4.5 }]);
    expect(format(q4f16, 'float').map((entry) => [entry.dataType, entry.bitsPerWeight])).toEqual([['FLOAT16', 16]]);
  });

  it('reports q8 as MatMulNBits 8-bit, block 32, at 9 bits per weight (the default --q8-format)', () => {
    const q8 = model(report, 'onnx/model_quantized.onnx');
    expect(format(q8, 'MatMulInteger')).toEqual([]);
    expect(format(q8, 'MatMulNBits')).toMatchObject([{ bits: 8, blockSize: 32, accuracyLevel: 4, symmetric: true, count: 17, bitsPerWeight: 9 }]);
  });

  it('reports --q8-format integer as MatMulInteger with int8 weights per output channel', async () => {
    const integerOut = join(scratch.path, 'polyglot-tiny-onnx-q8-integer');
    await convertToOnnx(POLYGLOT_TINY_DIR, { types: ['q8'], out: integerOut, force: true, q8Format: 'integer' });
    const q8 = model((await inspectPath(integerOut)) as OnnxInspectReport, 'onnx/model_quantized.onnx');
    const [integer] = format(q8, 'MatMulInteger');
    expect(integer).toMatchObject({ weightType: 'INT8', granularity: 'per-channel', count: 17 });
    // int8 values plus, per column of K rows, a float32 scale and an int8 zero point: 8 + 40/K bits.
    expect(integer?.bitsPerWeight).toBeGreaterThan(8);
    expect(integer?.bitsPerWeight).toBeLessThan(8.2);
    const text = await runCli('inspect', integerOut);
    expect(text.stdout).toContain('MatMulInteger INT8, per-channel');
  });

  it("counts exactly the checkpoint's parameters in every model, whatever the weight format", async () => {
    const expected = parameterCount(await readCheckpoint(POLYGLOT_TINY_DIR));
    expect(report.configParameters).toBe(expected);
    for (const entry of report.models) expect([entry.file, entry.parameters]).toEqual([entry.file, expected]);
    const bits = Object.fromEntries(report.models.map((entry) => [entry.type, entry.bitsPerWeight]));
    expect(bits['fp32']).toBe(32);
    // The fp32 token embedding keeps the quantized models far above their linears' 5 / 8 bits.
    expect(bits['q4']).toBeGreaterThan(5);
    expect(bits['q4']).toBeLessThan(bits['q8'] as number);
    expect(bits['q8']).toBeLessThan(32);
    expect(bits['q4f16']).toBeLessThan(bits['q4'] as number);
  });

  it('reports each external data file with its size on disk, holding every external tensor', () => {
    for (const entry of report.models) {
      expect(entry.dataFiles.length).toBe(1);
      for (const file of entry.dataFiles) {
        expect(file.bytes).toBe(statSync(join(out, 'onnx', file.location)).size);
        const stored = entry.tensors.filter((tensor) => tensor.storage !== 'inline' && tensor.storage.location === file.location);
        expect(file.tensors).toBe(stored.length);
        expect(file.tensorBytes).toBe(stored.reduce((sum, tensor) => sum + tensor.bytes, 0));
        expect(file.tensorBytes).toBeLessThanOrEqual(file.bytes);
      }
      expect(entry.fileBytes).toBe(statSync(join(out, entry.file)).size);
      expect(entry.weightBytes + entry.notCounted.rotaryTables.bytes + entry.notCounted.constants.bytes).toBe(entry.initializerBytes);
      expect(entry.notCounted.rotaryTables.tensors).toBe(2);
    }
  });

  it('inspects a single .onnx file', async () => {
    const single = (await inspectPath(join(out, 'onnx', 'model_q4.onnx'))) as OnnxInspectReport;
    expect(single.kind).toBe('onnx-file');
    expect(single.models).toHaveLength(1);
    expect(single.models[0]?.type).toBe('q4');
    expect(single.models[0]?.bitsPerWeight).toBe(model(report, 'onnx/model_q4.onnx').bitsPerWeight);
  });

  it('prints the weight formats, shapes and data files as text, every initializer with --tensors, and the report as JSON', async () => {
    const text = await runCli('inspect', out);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('ONNX folder, 4 models');
    expect(text.stdout).toContain('MatMulNBits 4-bit, block 32, accuracy_level 4, symmetric, FLOAT scales');
    expect(text.stdout).toContain('MatMulNBits 8-bit, block 32, accuracy_level 4, symmetric, FLOAT scales');
    expect(text.stdout).toContain('past_key_values.{0..3}.key  FLOAT [batch_size, 8, past_sequence_length, 32]');
    expect(text.stdout).toContain('model_q4.onnx_data');
    expect(text.stdout).not.toContain('model.embed_tokens.weight');
    const tensors = await runCli('inspect', join(out, 'onnx', 'model_q4.onnx'), '--tensors');
    const q4 = model(report, 'onnx/model_q4.onnx');
    for (const tensor of q4.tensors) expect(tensors.stdout).toContain(tensor.name);
    const json = await runCli('inspect', out, '--json');
    // --json prints the same report in its documented snake_case shape, with the run's provenance.
    const { provenance: _provenance, ...printed } = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(printed).toEqual(JSON.parse(JSON.stringify(toJsonShape(report))));
  });
});

describe('the ONNX reader', () => {
  let onnxDir: string;
  let modelPath: string;
  let base: Uint8Array;
  let cases = 0;
  beforeAll(async () => {
    const out = join(scratch.path, 'tiny-neox-onnx');
    await convertToOnnx(join(REPO_ROOT, 'fixtures', 'tiny-neox'), { types: ['q4'], out, force: true, workers: 0 });
    onnxDir = join(out, 'onnx');
    modelPath = join(onnxDir, 'model_q4.onnx');
    // A plain Uint8Array: Buffer#slice would hand the fuzz test a view of it instead of a copy.
    base = new Uint8Array(await readFile(modelPath));
  });

  /** Writes the real model with one edit next to its data file and returns the path. */
  function variant(edit: (model: ModelProto) => void): string {
    const decoded = decodeModel(base);
    edit(decoded);
    cases += 1;
    const path = join(onnxDir, `variant-${cases}.onnx`);
    writeFileSync(path, encodeModel(decoded));
    return path;
  }
  const firstExternal = (model: ModelProto): TensorProto => model.graph?.initializer?.find((tensor) => tensor.dataLocation === 1) as TensorProto;
  const setExternal = (tensor: TensorProto, key: string, value: string): void => {
    const entry = tensor.externalData?.find((item) => item.key === key);
    if (entry === undefined) tensor.externalData?.push({ key, value });
    else entry.value = value;
  };

  it('reads and validates a converted model, and finds it with its type', async () => {
    const summary = await checkOnnxExternalData(modelPath);
    expect(summary.irVersion).toBe(10);
    expect(summary.dataFiles.map((file) => file.location)).toEqual(['model_q4.onnx_data']);
    expect(summary.initializers.some((tensor) => tensor.name === 'model.embed_tokens.weight' && tensor.storage !== 'inline')).toBe(true);
    expect(summary.warnings).toEqual([]);
    const found = await findOnnxModels(join(onnxDir, '..'));
    expect(found.map((entry) => [entry.name, entry.type])).toEqual([['model_q4.onnx', 'q4']]);
    expect(await findOnnxModels(join(REPO_ROOT, 'fixtures', 'tiny-neox'))).toEqual([]);
  });

  it('refuses a truncated model as MALFORMED, naming the file', async () => {
    const path = join(onnxDir, 'truncated.onnx');
    writeFileSync(path, base.subarray(0, Math.floor(base.length / 2)));
    await expectPolyquantError(readOnnxModel(path), ERROR_CODES.MALFORMED, path, 'not a valid ONNX model');
  });

  it('refuses garbage bytes as MALFORMED, never a raw RangeError', async () => {
    const path = join(onnxDir, 'garbage.onnx');
    writeFileSync(path, Uint8Array.from({ length: 4096 }, (_, index) => (index * 73 + 41) % 256));
    await expectPolyquantError(readOnnxModel(path), ERROR_CODES.MALFORMED, path);
    writeFileSync(path, new Uint8Array(0));
    await expectPolyquantError(readOnnxModel(path), ERROR_CODES.MALFORMED, path, 'ir_version');
  });

  it('refuses a model past protobuf\'s 2 GiB message limit before reading it', async () => {
    const path = join(onnxDir, 'huge.onnx');
    writeFileSync(path, new Uint8Array(0));
    truncateSync(path, MAX_ONNX_MODEL_BYTES + 1); // sparse: no bytes are written
    await expectPolyquantError(readOnnxModel(path), ERROR_CODES.LIMIT, path, 'external data');
    truncateSync(path, 0);
  });

  it('reports a missing .onnx_data file as NOT_FOUND, naming the data file and the tensor', async () => {
    const path = variant((model) => setExternal(firstExternal(model), 'location', 'model_q4.onnx_data_7'));
    const error = await expectPolyquantError(readOnnxModel(path), ERROR_CODES.NOT_FOUND, 'model_q4.onnx_data_7', 'model.embed_tokens.weight');
    expect(error.file).toBe(join(onnxDir, 'model_q4.onnx_data_7'));
  });

  it('refuses external data locations that leave the model folder', async () => {
    for (const location of ['../model_q4.onnx_data', 'sub/../../secret', '/etc/passwd', '..\\model.onnx_data', 'C:\\data.bin']) {
      const path = variant((model) => setExternal(firstExternal(model), 'location', location));
      await expectPolyquantError(readOnnxModel(path), ERROR_CODES.UNSAFE, path, JSON.stringify(location));
    }
  });

  it('refuses an external range that runs past the end of the data file', async () => {
    const size = statSync(join(onnxDir, 'model_q4.onnx_data')).size;
    const path = variant((model) => setExternal(firstExternal(model), 'offset', String(size - 64)));
    await expectPolyquantError(readOnnxModel(path), ERROR_CODES.MALFORMED, 'runs past the end of model_q4.onnx_data', 'model.embed_tokens.weight');
  });

  it('refuses offsets and lengths that are not decimal safe integers', async () => {
    for (const [key, value] of [['offset', '-64'], ['offset', '1e3'], ['length', '0x10'], ['offset', '9007199254740993']] as const) {
      const path = variant((model) => setExternal(firstExternal(model), key, value));
      await expectPolyquantError(readOnnxModel(path), ERROR_CODES.MALFORMED, `external data ${key} ${JSON.stringify(value)}`);
    }
  });

  it("refuses an external length that differs from the tensor's dims × type size", async () => {
    const path = variant((model) => {
      const tensor = firstExternal(model);
      setExternal(tensor, 'length', String(Number(tensor.externalData?.find((item) => item.key === 'length')?.value) - 4));
    });
    await expectPolyquantError(readOnnxModel(path), ERROR_CODES.MALFORMED, 'external data length', 'model.embed_tokens.weight');
  });

  it('refuses inline data shorter than its dims, negative dims, a missing data type, no opset and no graph', async () => {
    const inline = (model: ModelProto): TensorProto => model.graph?.initializer?.find((tensor) => tensor.dataLocation !== 1) as TensorProto;
    const cases: [edit: (model: ModelProto) => void, fragment: string][] = [
      [(model) => { inline(model).dims = [3]; }, 'raw_data holds 8 bytes'],
      [(model) => { firstExternal(model).dims = [-1, 64]; }, 'dimension -1'],
      [(model) => { firstExternal(model).dataType = 0; }, 'no data type'],
      [(model) => { model.opsetImport = []; }, 'imports no opset'],
      [(model) => { model.graph = null; }, 'no graph'],
      [(model) => { setExternal(firstExternal(model), 'location', 'model_q4.onnx_data\u001b[2J'); }, 'control characters'],
    ];
    for (const [edit, fragment] of cases) await expectPolyquantError(readOnnxModel(variant(edit)), ERROR_CODES.MALFORMED, fragment);
  });

  it(`only ever throws PolyquantError on ${FUZZ_CASES} seeded byte flips and truncations of a real model, through inspect too`, async () => {
    const random = mulberry32(0x0a1e_0001);
    const fuzzPath = join(onnxDir, 'fuzz.onnx');
    const foreign: string[] = [];
    const codes = new Map<string, number>();
    let accepted = 0;
    for (let index = 0; index < FUZZ_CASES; index += 1) {
      let bytes = base.slice();
      if (index % 10 === 9) bytes = bytes.subarray(0, Math.floor(random() * bytes.length));
      const flips = 1 + Math.floor(random() * 8);
      for (let flip = 0; flip < flips && bytes.length > 0; flip += 1) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
      const outcome = async (work: Promise<unknown>): Promise<void> => {
        try {
          await work;
          accepted += 1;
        } catch (error) {
          if (error instanceof PolyquantError) codes.set(error.code, (codes.get(error.code) ?? 0) + 1);
          else foreign.push(`case ${index}: ${String(error)}`);
        }
      };
      await outcome(readOnnxModelBytes(fuzzPath, bytes));
      if (index % 10 === 0) {
        writeFileSync(fuzzPath, bytes);
        await outcome(inspectPath(fuzzPath));
      }
    }
    expect(foreign).toEqual([]);
    // Neither degenerate: some mutations still load, and many are refused.
    expect(accepted).toBeGreaterThan(10);
    expect(codes.get(ERROR_CODES.MALFORMED) ?? 0).toBeGreaterThan(10);
  });
});
