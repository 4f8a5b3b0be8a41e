/**
 * `polyquant inspect` for ONNX: a transformers.js-style folder (`onnx/*.onnx` + external data, config and
 * tokenizer at the root) or a single `.onnx` file (JSON schema `polyquant.inspect-onnx/2`). Per model file:
 * IR version, opsets, inputs and outputs, op counts, the weight formats (MatMulNBits bits / block_size /
 * accuracy_level / zero points / scale dtype, MatMulInteger int8 or uint8 per channel or per tensor, float
 * weights by dtype), external data files, and bits per weight. Every file goes through the validating
 * reader (converters/onnx/read.ts) first, so a model inspect describes is one onnxruntime can load.
 */
import { basename, join, relative, resolve } from 'node:path';
import { expectedTensors, type NeoXConfig, normaliseNeoXConfig } from '../arch/gpt-neox.js';
import {
  listOnnxFiles,
  type OnnxDataFileSummary,
  type OnnxExternalRange,
  type OnnxModelFile,
  type OnnxModelSummary,
  type OnnxNodeSummary,
  type OnnxTensorSummary,
  type OnnxValueSummary,
  readOnnxModel,
} from '../converters/onnx/read.js';
import { ONNX_SUBFOLDER, type OnnxTypeName, onnxTypeOfFile } from '../converters/onnx/types.js';
import { ERROR_CODES, isPolyquantError, PolyquantError } from '../errors.js';
import { pathExists } from '../io/file.js';
import { WEIGHT_FILES } from '../readers/checkpoint.js';
import { isRecord, readJsonFile } from '../readers/json-file.js';
import { readTokenizerFiles, summariseTokenizer, type TokenizerSummary } from '../readers/tokenizer.js';

export const INSPECT_ONNX_SCHEMA = 'polyquant.inspect-onnx/2';


/** One weight format of a model and what its weights cost. */
export type OnnxWeightFormat = (
  | {
      /** com.microsoft MatMulNBits (specs/onnx.md §2.1). */
      readonly format: 'MatMulNBits';
      readonly bits: number;
      readonly blockSize: number;
      /** 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations. */
      readonly accuracyLevel: number;
      /** No zero_points input: the implied zero point 2^(bits−1). */
      readonly symmetric: boolean;
      /** The scales initializer's data type. */
      readonly scaleType: string;
    }
  | {
      /** DynamicQuantizeLinear + MatMulInteger (transformers.js' q8; specs/onnx.md §2.6). */
      readonly format: 'MatMulInteger';
      readonly weightType: string;
      /** One scale / zero point per output column, or one for the whole matrix; `unknown` when neither is found. */
      readonly granularity: 'per-channel' | 'per-tensor' | 'unknown';
    }
  | {
      /** Floating-point initializers: MatMul weights (W^T), embeddings, norms, biases. */
      readonly format: 'float';
      readonly dataType: string;
    }
) & {
  /** Quantized nodes (MatMulNBits / MatMulInteger) or float tensors of this format. */
  readonly count: number;
  readonly parameters: number;
  /** Bytes of every initializer that stores these weights: quantized values, scales and zero points. */
  readonly bytes: number;
  readonly bitsPerWeight: number;
};

/** What an initializer is, for the tensor list and the totals. */
export type OnnxTensorRole =
  | 'MatMulNBits B'
  | 'MatMulNBits scales'
  | 'MatMulNBits zero points'
  | 'MatMulInteger B'
  | 'MatMulInteger scale'
  | 'MatMulInteger zero point'
  | 'float weight'
  /** Rotary cos/sin caches: computed from the config, not learned. */
  | 'rotary table'
  /** Shapes, axes, indices and scalars (mask values, the attention scale). */
  | 'constant';

export interface OnnxInspectTensor {
  readonly name: string;
  readonly dataType: string;
  readonly dims: readonly number[];
  readonly bytes: number;
  readonly storage: 'inline' | OnnxExternalRange;
  readonly role: OnnxTensorRole;
}

export interface OnnxInspectModel {
  /** Relative to the inspected folder (`onnx/model_q4.onnx`), or the file's own name. */
  readonly file: string;
  /** The transformers.js dtype its name stands for, or null for another name. */
  readonly type: OnnxTypeName | null;
  /** Bytes of the .onnx file itself (the graph and any inline tensors). */
  readonly fileBytes: number;
  readonly irVersion: number;
  readonly producer: { readonly name: string; readonly version: string };
  readonly opsets: readonly { readonly domain: string; readonly version: number }[];
  readonly inputs: readonly OnnxValueSummary[];
  readonly outputs: readonly OnnxValueSummary[];
  readonly nodes: number;
  readonly ops: readonly { readonly domain: string; readonly opType: string; readonly count: number }[];
  readonly formats: readonly OnnxWeightFormat[];
  /** Weight parameters: logical elements of every weight matrix and float weight (see `weightTotals`). */
  readonly parameters: number;
  /** Bytes that store them (quantized values, scales and zero points, float weights). */
  readonly weightBytes: number;
  /** 8 × weightBytes / parameters. */
  readonly bitsPerWeight: number;
  /** Stored, but neither weights nor counted in bits per weight. */
  readonly notCounted: {
    readonly rotaryTables: { readonly tensors: number; readonly bytes: number };
    readonly constants: { readonly tensors: number; readonly bytes: number };
  };
  /** Every initializer's bytes, weights and the rest. */
  readonly initializerBytes: number;
  readonly dataFiles: readonly Omit<OnnxDataFileSummary, 'path'>[];
  readonly tensors: readonly OnnxInspectTensor[];
  readonly metadata: Readonly<Record<string, string>>;
  readonly warnings: readonly string[];
}

export interface OnnxInspectReport {
  readonly schema: typeof INSPECT_ONNX_SCHEMA;
  readonly path: string;
  readonly kind: 'onnx-folder' | 'onnx-file';
  /** From config.json (folders only); null when absent or not a GPT-NeoX config polyquant reads. */
  readonly architecture: string | null;
  readonly config: NeoXConfig | null;
  /** Parameters config.json implies (tied output head counted once), to compare with each model's. */
  readonly configParameters: number | null;
  readonly tokenizer: TokenizerSummary | null;
  /** genai_config.json's decoder file, and whether it exists. */
  readonly genai: { readonly filename: string; readonly exists: boolean } | null;
  readonly models: readonly OnnxInspectModel[];
  readonly warnings: readonly string[];
}

/**
 * The .onnx files a folder holds for inspect: `onnx/*.onnx` (a transformers.js folder), else the folder's
 * own `*.onnx` (the onnx/ subfolder itself, or a GenAI-style folder). Empty: not an ONNX folder.
 */
export async function onnxFolderModels(dir: string): Promise<OnnxModelFile[]> {
  const nested = await listOnnxFiles(join(dir, ONNX_SUBFOLDER));
  return nested.length > 0 ? nested : listOnnxFiles(dir);
}

export async function inspectOnnxFolder(path: string): Promise<OnnxInspectReport> {
  const dir = resolve(path);
  const files = await onnxFolderModels(dir);
  if (files.length === 0) {
    throw new PolyquantError(ERROR_CODES.NOT_FOUND, `no .onnx model in ${ONNX_SUBFOLDER}/ or in the folder itself`, { file: dir });
  }
  const warnings: string[] = [];
  const { config, configParameters } = await folderConfig(dir, warnings);
  const tokenizer = await folderTokenizer(dir, warnings);
  const models: OnnxInspectModel[] = [];
  for (const file of files) models.push(inspectModel(await readOnnxModel(file.path), relative(dir, file.path), file.type ?? null));
  const genai = await genaiDecoder(dir, warnings);
  await checkExternalDataCounts(dir, models, warnings);
  const hfWeights: string[] = [];
  for (const entry of WEIGHT_FILES) {
    for (const name of [entry.index, entry.single]) if (await pathExists(join(dir, name))) hfWeights.push(name);
  }
  if (hfWeights.length > 0) {
    warnings.push(`the folder also holds Hugging Face weights (${hfWeights.join(', ')}); this report covers the ONNX models only — inspect a weight file to see them`);
  }
  return {
    schema: INSPECT_ONNX_SCHEMA,
    path: dir,
    kind: 'onnx-folder',
    architecture: config?.architecture ?? null,
    config,
    configParameters,
    tokenizer,
    genai,
    models,
    warnings,
  };
}

export async function inspectOnnxFile(path: string): Promise<OnnxInspectReport> {
  const file = resolve(path);
  const summary = await readOnnxModel(file);
  const name = basename(file);
  return {
    schema: INSPECT_ONNX_SCHEMA,
    path: file,
    kind: 'onnx-file',
    architecture: null,
    config: null,
    configParameters: null,
    tokenizer: null,
    genai: null,
    models: [inspectModel(summary, name, onnxTypeOfFile(name) ?? null)],
    warnings: [],
  };
}

// ==================================================================================== one model

const FLOAT_TYPES = new Set(['FLOAT', 'FLOAT16', 'BFLOAT16', 'DOUBLE']);
/** The rotary caches' names in onnxruntime-genai's builder and in ours (specs/onnx.md §1.2). */
const ROTARY_TABLE_NAMES = new Set(['cos_cache', 'sin_cache']);
/** Inputs that take cos/sin caches: GroupQueryAttention 7, 8; com.microsoft RotaryEmbedding 2, 3; RotaryEmbedding-23 1, 2 (specs/onnx.md §2.2, §2.4). */
const ROTARY_TABLE_INPUTS: Readonly<Record<string, readonly number[]>> = {
  'com.microsoft/GroupQueryAttention': [7, 8],
  'com.microsoft/RotaryEmbedding': [2, 3],
  'ai.onnx/RotaryEmbedding': [1, 2],
};
const MICROSOFT = 'com.microsoft';

/** A positive safe-integer attribute, or undefined. */
function intAttribute(node: OnnxNodeSummary, name: string, fallback?: number): number | undefined {
  const value = node.attributes[name] ?? fallback;
  return typeof value === 'number' && Number.isSafeInteger(value) ? value : undefined;
}

function input(node: OnnxNodeSummary, index: number): string | undefined {
  const name = node.inputs[index];
  return name === undefined || name === '' ? undefined : name;
}

function bits(bytes: number, parameters: number): number {
  return parameters > 0 ? (8 * bytes) / parameters : 0;
}

/**
 * Sorts a model's initializers into weight formats and counts what bits per weight means here:
 *
 * - **parameters** are the logical elements of the learned weights: N×K for each MatMulNBits node (from its
 *   `N` and `K` attributes, not from the packed `B`), K×N for each MatMulInteger's `B`, and every element of
 *   a floating-point initializer of two or more elements (MatMul W^T, embeddings, norms, biases). A matrix
 *   two nodes share is counted once. This equals the checkpoint's parameter count for our exports.
 * - **weight bytes** are everything stored for those parameters: packed values, scales, zero points, floats.
 * - Not counted in either: the rotary cos/sin tables (computed from the config, by their GenAI names or the
 *   op inputs that take them) and constants (non-float initializers outside the quantized ops — shapes, axes
 *   — and one-element floats such as the mask value and the attention scale).
 *
 * So MatMulNBits 4-bit, block 32, fp32 scales comes to 4 + 32/32 = 5 bits per weight, fp16 scales 4.5.
 */
function inspectModel(summary: OnnxModelSummary, file: string, type: OnnxTypeName | null): OnnxInspectModel {
  const warnings = [...summary.warnings];
  const byName = new Map(summary.initializers.map((tensor) => [tensor.name, tensor]));
  const roles = new Map<string, OnnxTensorRole>();
  const claim = (name: string | undefined, role: OnnxTensorRole): OnnxTensorSummary | undefined => {
    if (name === undefined) return undefined;
    const tensor = byName.get(name);
    if (tensor === undefined || roles.has(name)) return undefined;
    roles.set(name, role);
    return tensor;
  };
  const formats = new Map<string, OnnxWeightFormat & { count: number; parameters: number; bytes: number }>();
  const add = (key: string, make: () => OnnxWeightFormat, parameters: number, bytes: number): void => {
    const entry = formats.get(key) ?? { ...make(), count: 0, parameters: 0, bytes: 0 };
    entry.count += 1;
    entry.parameters += parameters;
    entry.bytes += bytes;
    formats.set(key, entry);
  };
  const producers = new Map<string, OnnxNodeSummary>();
  const consumers = new Map<string, OnnxNodeSummary[]>();
  for (const node of summary.nodes) {
    for (const output of node.outputs) producers.set(output, node);
    for (const name of node.inputs) consumers.set(name, [...(consumers.get(name) ?? []), node]);
  }

  for (const node of summary.nodes) {
    if (node.domain === MICROSOFT && node.opType === 'MatMulNBits') {
      const where = `${file}: MatMulNBits ${JSON.stringify(node.name)}`;
      const B = claim(input(node, 1), 'MatMulNBits B');
      if (B === undefined) {
        if (!byName.has(input(node, 1) ?? '')) warnings.push(`${where}: B is not an initializer; its weights are not counted`);
        continue;
      }
      const scales = claim(input(node, 2), 'MatMulNBits scales');
      const zeroPoints = claim(input(node, 3), 'MatMulNBits zero points');
      const K = intAttribute(node, 'K');
      const N = intAttribute(node, 'N');
      const nbits = intAttribute(node, 'bits', 4);
      const blockSize = intAttribute(node, 'block_size');
      const accuracyLevel = intAttribute(node, 'accuracy_level', 0) ?? 0;
      if (K === undefined || N === undefined || K <= 0 || N <= 0 || nbits === undefined || blockSize === undefined || blockSize <= 0) {
        warnings.push(`${where}: K, N, bits or block_size is missing or not a positive integer; its weights are not counted`);
        continue;
      }
      const blob = (blockSize * nbits) / 8;
      const expected = [N, Math.ceil(K / blockSize), blob];
      if (B.dims.join(',') !== expected.join(',')) {
        warnings.push(`${where}: B is [${B.dims.join(', ')}], but N=${N}, K=${K}, bits=${nbits}, block_size=${blockSize} need [${expected.join(', ')}]`);
      }
      const scaleType = scales?.dataType ?? 'none';
      const symmetric = input(node, 3) === undefined;
      add(
        `nbits/${nbits}/${blockSize}/${accuracyLevel}/${symmetric}/${scaleType}`,
        () => ({ format: 'MatMulNBits', bits: nbits, blockSize, accuracyLevel, symmetric, scaleType, count: 0, parameters: 0, bytes: 0, bitsPerWeight: 0 }),
        N * K,
        B.bytes + (scales?.bytes ?? 0) + (zeroPoints?.bytes ?? 0),
      );
    } else if (node.domain === 'ai.onnx' && node.opType === 'MatMulInteger') {
      const B = claim(input(node, 1), 'MatMulInteger B');
      if (B === undefined) continue;
      const zeroPoint = claim(input(node, 3), 'MatMulInteger zero point');
      // quantize_dynamic's chain: Mul(DynamicQuantizeLinear's scale output, the weight scale) scales the
      // product (onnxruntime/python/tools/quantization/operators/matmul.py); find the weight scale there.
      let scale: OnnxTensorSummary | undefined;
      const quantizer = producers.get(input(node, 0) ?? '');
      const activationScale = quantizer?.opType === 'DynamicQuantizeLinear' ? quantizer.outputs[1] : undefined;
      for (const mul of consumers.get(activationScale ?? '') ?? []) {
        if (mul.opType !== 'Mul') continue;
        const other = mul.inputs.find((name) => name !== activationScale);
        const candidate = byName.get(other ?? '');
        if (candidate !== undefined && FLOAT_TYPES.has(candidate.dataType) && !roles.has(candidate.name)) {
          scale = claim(candidate.name, 'MatMulInteger scale');
          break;
        }
      }
      const columns = B.dims[1] ?? 0;
      const perChannel = (tensor: OnnxTensorSummary | undefined): 'per-channel' | 'per-tensor' | undefined =>
        tensor === undefined ? undefined : tensor.elements === 1 ? 'per-tensor' : tensor.elements === columns ? 'per-channel' : undefined;
      const granularity = perChannel(zeroPoint) ?? perChannel(scale) ?? 'unknown';
      add(
        `integer/${B.dataType}/${granularity}`,
        () => ({ format: 'MatMulInteger', weightType: B.dataType, granularity, count: 0, parameters: 0, bytes: 0, bitsPerWeight: 0 }),
        B.elements,
        B.bytes + (zeroPoint?.bytes ?? 0) + (scale?.bytes ?? 0),
      );
    }
    const rotaryInputs = ROTARY_TABLE_INPUTS[`${node.domain}/${node.opType}`] ?? [];
    for (const index of rotaryInputs) claim(input(node, index), 'rotary table');
  }

  for (const tensor of summary.initializers) {
    if (roles.has(tensor.name)) continue;
    if (ROTARY_TABLE_NAMES.has(tensor.name) && FLOAT_TYPES.has(tensor.dataType)) {
      roles.set(tensor.name, 'rotary table');
    } else if (!FLOAT_TYPES.has(tensor.dataType) || tensor.elements <= 1) {
      roles.set(tensor.name, 'constant');
    } else {
      roles.set(tensor.name, 'float weight');
      add(`float/${tensor.dataType}`, () => ({ format: 'float', dataType: tensor.dataType, count: 0, parameters: 0, bytes: 0, bitsPerWeight: 0 }), tensor.elements, tensor.bytes);
    }
  }
  const notCounted = { rotaryTables: { tensors: 0, bytes: 0 }, constants: { tensors: 0, bytes: 0 } };
  for (const tensor of summary.initializers) {
    const role = roles.get(tensor.name);
    const entry = role === 'rotary table' ? notCounted.rotaryTables : role === 'constant' ? notCounted.constants : undefined;
    if (entry === undefined) continue;
    entry.tensors += 1;
    entry.bytes += tensor.bytes;
  }

  const formatList = [...formats.values()].map((entry) => ({ ...entry, bitsPerWeight: bits(entry.bytes, entry.parameters) }));
  const parameters = formatList.reduce((sum, entry) => sum + entry.parameters, 0);
  const weightBytes = formatList.reduce((sum, entry) => sum + entry.bytes, 0);
  return {
    file,
    type,
    fileBytes: summary.fileBytes,
    irVersion: summary.irVersion,
    producer: summary.producer,
    opsets: summary.opsets,
    inputs: summary.inputs,
    outputs: summary.outputs,
    nodes: summary.nodes.length,
    ops: summary.ops,
    formats: formatList,
    parameters,
    weightBytes,
    bitsPerWeight: bits(weightBytes, parameters),
    notCounted,
    initializerBytes: summary.initializers.reduce((sum, tensor) => sum + tensor.bytes, 0),
    dataFiles: summary.dataFiles.map(({ path: _path, ...entry }) => entry),
    tensors: summary.initializers.map((tensor) => ({
      name: tensor.name,
      dataType: tensor.dataType,
      dims: tensor.dims,
      bytes: tensor.bytes,
      storage: tensor.storage,
      role: roles.get(tensor.name) ?? 'constant',
    })),
    metadata: summary.metadata,
    warnings,
  };
}

// ================================================================================ folder files

/** config.json, when it is a GPT-NeoX config polyquant reads; anything else is a warning, not a failure. */
async function folderConfig(dir: string, warnings: string[]): Promise<{ config: NeoXConfig | null; configParameters: number | null }> {
  const path = join(dir, 'config.json');
  if (!(await pathExists(path))) {
    warnings.push('no config.json: transformers.js needs one beside the onnx/ folder');
    return { config: null, configParameters: null };
  }
  try {
    const config = normaliseNeoXConfig(await readJsonFile(path), path);
    let parameters = 0;
    for (const tensor of expectedTensors(config)) {
      if (!tensor.optional) parameters += tensor.shape.reduce((product, dim) => product * dim, 1);
    }
    return { config, configParameters: parameters };
  } catch (error) {
    if (!isPolyquantError(error)) throw error;
    warnings.push(`config.json: ${error.detail}`);
    return { config: null, configParameters: null };
  }
}

async function folderTokenizer(dir: string, warnings: string[]): Promise<TokenizerSummary | null> {
  try {
    const summary = summariseTokenizer(await readTokenizerFiles(dir));
    if (summary === undefined) warnings.push('no tokenizer.json: transformers.js and onnxruntime-genai need one');
    return summary ?? null;
  } catch (error) {
    if (!isPolyquantError(error)) throw error;
    warnings.push(`tokenizer: ${error.message}`);
    return null;
  }
}

/** genai_config.json's `model.decoder.filename` (specs/onnx.md §1.6), resolved against the folder. */
async function genaiDecoder(dir: string, warnings: string[]): Promise<{ filename: string; exists: boolean } | null> {
  const path = join(dir, 'genai_config.json');
  if (!(await pathExists(path))) return null;
  let raw: unknown;
  try {
    raw = await readJsonFile(path);
  } catch (error) {
    if (!isPolyquantError(error)) throw error;
    warnings.push(`genai_config.json: ${error.detail}`);
    return null;
  }
  const model = isRecord(raw) ? raw['model'] : undefined;
  const decoder = isRecord(model) ? model['decoder'] : undefined;
  const filename = isRecord(decoder) ? decoder['filename'] : undefined;
  if (typeof filename !== 'string' || filename === '') {
    warnings.push('genai_config.json names no model.decoder.filename');
    return null;
  }
  // The same rule as external data: GenAI joins the name to the folder, so it must stay inside it.
  const inside = !filename.startsWith('/') && !filename.split(/[\\/]/).includes('..');
  const exists = inside && (await pathExists(join(dir, filename)));
  if (!exists) warnings.push(`genai_config.json's decoder ${JSON.stringify(filename)} is not a file in this folder`);
  return { filename, exists };
}

/**
 * transformers.js fetches exactly the number of external data files config.json's
 * `transformers.js_config.use_external_data_format` gives per model (utils/model-loader.js; specs/onnx.md
 * §3.2): `true` means one, a number that many, a map per file name. A different count loses tensors.
 */
async function checkExternalDataCounts(dir: string, models: readonly OnnxInspectModel[], warnings: string[]): Promise<void> {
  const path = join(dir, 'config.json');
  if (!(await pathExists(path))) return;
  const raw = await readJsonFile(path).catch(() => undefined);
  const settings = isRecord(raw) ? raw['transformers.js_config'] : undefined;
  const setting = isRecord(settings) ? settings['use_external_data_format'] : undefined;
  for (const model of models) {
    if (!model.file.startsWith(`${ONNX_SUBFOLDER}/`)) continue;
    const name = model.file.slice(ONNX_SUBFOLDER.length + 1);
    const value = isRecord(setting) ? setting[name] : setting;
    const declared = value === true ? 1 : typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : 0;
    if (declared !== model.dataFiles.length) {
      warnings.push(
        `${model.file} has ${model.dataFiles.length} external data file(s), but config.json's transformers.js_config.use_external_data_format gives ${declared} for it; transformers.js would fetch the wrong files`,
      );
    }
  }
}
