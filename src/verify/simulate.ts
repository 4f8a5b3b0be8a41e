/**
 * Simulated quantization (`verify --simulate`): the reference engine runs on weights passed through
 * quantize → dequantize with the per-tensor types a GGUF of that type would get (llama-quantize's mixture,
 * src/quant/policy.ts), norms and biases untouched — a quality sweep without writing any file.
 *
 * A WebGPU layout name (q4f16_1, q4f32_1, q0f16, q0f32, q8f16_pq, q8f32_pq) simulates what
 * `convert --to webgpu` writes with its default raw float32 storage: every tensor the layout quantizes —
 * the four linears of each block, embed_out and embed_in (group layouts quantize both; the q0 layouts
 * round them to their dtype) — goes through quantizeWebGpu → dequantizeWebGpu (quant/webgpu-layouts.ts),
 * i.e. exactly the values a kernel reads from the converted file; norms and biases stay as they are. The
 * fused QKV reorder the converter applies only moves rows, and rows are quantized independently, so the
 * HF-layout result is the same numbers.
 */
import type { NeoXConfig } from '../arch/gpt-neox.js';
import { expectedTensors } from '../arch/gpt-neox.js';
import { ggufShape, ggufTensorName } from '../converters/gguf/names.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { dequantizeRows, quantizeRows } from '../quant/api.js';
import { GGML_TYPE_NAMES, type GgmlTypeName, isGgmlTypeName } from '../quant/ggml-types.js';
import { GGUF_FILE_TYPE_NAMES, type GgufFileType, isGgufFileType, tensorTypeFor } from '../quant/policy.js';
import { dequantizeWebGpu, isWebGpuLayoutName, quantizeWebGpu, WEBGPU_LAYOUT_NAMES, WEBGPU_LAYOUTS, type WebGpuLayoutName } from '../quant/webgpu-layouts.js';
import type { WeightTransform } from './engines/reference-layout.js';

/**
 * A ggml type name selects the GGUF file type built on it (`Q4_K` → q4_k_m, as llama-quantize's most used
 * K mixes; `Q8_0` → q8_0); a file type name (`q4_k_s`) selects that mixture exactly.
 */
const FILE_TYPE_FOR_GGML_TYPE: Partial<Record<GgmlTypeName, GgufFileType>> = {
  F32: 'f32',
  F16: 'f16',
  BF16: 'bf16',
  Q8_0: 'q8_0',
  Q4_0: 'q4_0',
  Q4_1: 'q4_1',
  Q5_0: 'q5_0',
  Q5_1: 'q5_1',
  Q2_K: 'q2_k',
  Q3_K: 'q3_k_m',
  Q4_K: 'q4_k_m',
  Q5_K: 'q5_k_m',
  Q6_K: 'q6_k',
  IQ4_NL: 'iq4_nl',
  IQ4_XS: 'iq4_xs',
};

/** Any case is accepted: `q4_k`, `Q4_K` and `Q4_K_M` name what `Q4_K` and `q4_k_m` do. */
export function simulationFileType(scheme: string): GgufFileType {
  const lower = scheme.trim().toLowerCase();
  if (isGgufFileType(lower)) return lower;
  const upper = lower.toUpperCase();
  const fileType = isGgmlTypeName(upper) ? FILE_TYPE_FOR_GGML_TYPE[upper] : undefined;
  if (fileType === undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--simulate ${JSON.stringify(scheme)} is not a ggml type or GGUF file type`, {
      hint: `use one of ${[...GGML_TYPE_NAMES, ...GGUF_FILE_TYPE_NAMES].join(', ')}`,
    });
  }
  return fileType;
}


/** What `--simulate` names: a GGUF file type (from a ggml or file type name) or a WebGPU layout. */
export type SimulationScheme = { readonly format: 'gguf'; readonly fileType: GgufFileType } | { readonly format: 'webgpu'; readonly layout: WebGpuLayoutName };

/** Checks a `--simulate` value: a WebGPU layout name (any case), else what simulationFileType accepts. */
export function simulationScheme(scheme: string): SimulationScheme {
  const lower = scheme.trim().toLowerCase();
  if (isWebGpuLayoutName(lower)) return { format: 'webgpu', layout: lower };
  try {
    return { format: 'gguf', fileType: simulationFileType(scheme) };
  } catch (error) {
    if (!(error instanceof PolyquantError)) throw error;
    throw new PolyquantError(ERROR_CODES.USAGE, `--simulate ${JSON.stringify(scheme)} is not a ggml type, GGUF file type or WebGPU layout`, {
      hint: `use one of ${[...GGML_TYPE_NAMES, ...GGUF_FILE_TYPE_NAMES, ...WEBGPU_LAYOUT_NAMES].join(', ')}`,
    });
  }
}

export interface Simulation {
  /** The GGUF file type or WebGPU layout simulated (what the report names). */
  readonly fileType: GgufFileType | WebGpuLayoutName;
  /** HF tensor name → the ggml type or WebGPU layout it is simulated in. */
  readonly types: ReadonlyMap<string, GgmlTypeName | WebGpuLayoutName>;
  readonly transform: WeightTransform;
}

export function planSimulation(scheme: string, config: NeoXConfig): Simulation {
  const chosen = simulationScheme(scheme);
  if (chosen.format === 'webgpu') return planWebGpuSimulation(chosen.layout, config);
  const { fileType } = chosen;
  const types = new Map<string, GgmlTypeName>();
  for (const entry of expectedTensors(config)) {
    // The policy keys on GGUF names and ggml dims; it leaves norms and biases (1-D) unquantized.
    const type = tensorTypeFor(fileType, { name: ggufTensorName(entry.role, entry.layer), ne: ggufShape(entry.shape) }, {
      numLayers: config.numLayers,
      tiedEmbeddings: config.tieWordEmbeddings,
      imatrix: false,
    });
    if (type !== undefined) types.set(entry.name, type);
  }
  const transform: WeightTransform = (name, values, shape) => {
    const type = types.get(name);
    if (type === undefined || type === 'F32') return values;
    const nPerRow = shape[shape.length - 1] ?? values.length;
    return dequantizeRows(type, quantizeRows(type, values, nPerRow, { tensor: name }), nPerRow, { tensor: name });
  };
  return { fileType, types, transform };
}

/** WebGPU layouts (see the module comment): every 2-D weight the layout stores in its own form. */
function planWebGpuSimulation(name: WebGpuLayoutName, config: NeoXConfig): Simulation {
  const layout = WEBGPU_LAYOUTS[name];
  const types = new Map<string, WebGpuLayoutName>();
  // q0f32 stores float32 weights as they are: nothing to simulate.
  const changes = layout.kind === 'group-quant' || layout.modelDType !== 'float32';
  for (const entry of expectedTensors(config)) if (entry.shape.length === 2 && changes) types.set(entry.name, name);
  const transform: WeightTransform = (tensorName, values, shape) => {
    if (!types.has(tensorName) || shape.length !== 2) return values;
    const [N, K] = shape as [number, number];
    return dequantizeWebGpu(quantizeWebGpu(name, values, N, K));
  };
  return { fileType: name, types, transform };
}
