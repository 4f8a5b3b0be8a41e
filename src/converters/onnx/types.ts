/**
 * The ONNX export types: one table, named as transformers.js names its dtypes (utils/dtypes.js), with the
 * file suffix it looks for and the formats of activations and weights inside (specs/onnx.md §0, §3.2, §3.4).
 * Everything else — CLI choices, file names, the graph's ops — is derived from this table.
 */
import type { OnnxDataTypeName } from './proto.js';

/** How a linear layer's weight is stored and multiplied. */
export type LinearFormat =
  /** MatMul by W^T `[K, N]` in the activation dtype. */
  | 'float'
  /** com.microsoft MatMulNBits, 4-bit blocks (block size and symmetry from the options). */
  | 'nbits4'
  /** com.microsoft MatMulNBits, 8-bit blocks. */
  | 'nbits8'
  /** DynamicQuantizeLinear + MatMulInteger, int8 per output channel (ORT fuses it to DynamicQuantizeMatMul). */
  | 'integer8';

export interface OnnxTypeRow {
  readonly name: OnnxTypeName;
  /** transformers.js' file suffix: `onnx/model{suffix}.onnx`. */
  readonly suffix: string;
  /** Activations, norms, biases, the token embedding and rotary tables inside the graph. */
  readonly activation: Extract<OnnxDataTypeName, 'FLOAT' | 'FLOAT16'>;
  /** The four linear layers of every block and (unless kept) the output head. */
  readonly linear: LinearFormat;
  /** MatMulNBits scales' dtype: the activation dtype (the op's T1). */
  readonly scaleType: 'f32' | 'f16';
}

/** The folder transformers.js loads decoder models from (models/modeling_utils.js, `subfolder='onnx'`; specs/onnx.md §3.2). */
export const ONNX_SUBFOLDER = 'onnx';

export const ONNX_TYPE_NAMES = ['fp32', 'fp16', 'q8', 'q4', 'q4f16'] as const;
export type OnnxTypeName = (typeof ONNX_TYPE_NAMES)[number];

export const ONNX_TYPES: Readonly<Record<OnnxTypeName, OnnxTypeRow>> = {
  fp32: { name: 'fp32', suffix: '', activation: 'FLOAT', linear: 'float', scaleType: 'f32' },
  fp16: { name: 'fp16', suffix: '_fp16', activation: 'FLOAT16', linear: 'float', scaleType: 'f16' },
  // transformers.js' q8 is dynamic int8 quantization; `--q8-format nbits` swaps in MatMulNBits bits=8.
  q8: { name: 'q8', suffix: '_quantized', activation: 'FLOAT', linear: 'integer8', scaleType: 'f32' },
  q4: { name: 'q4', suffix: '_q4', activation: 'FLOAT', linear: 'nbits4', scaleType: 'f32' },
  q4f16: { name: 'q4f16', suffix: '_q4f16', activation: 'FLOAT16', linear: 'nbits4', scaleType: 'f16' },
};

export function isOnnxTypeName(name: string): name is OnnxTypeName {
  return (ONNX_TYPE_NAMES as readonly string[]).includes(name);
}

/** The model file of a type: `model_q4.onnx`. */
export function onnxModelFileName(type: OnnxTypeName): string {
  return `model${ONNX_TYPES[type].suffix}.onnx`;
}

/** The type a model file name stands for (`model_q4.onnx` → q4), if it is one of ours. */
export function onnxTypeOfFile(fileName: string): OnnxTypeName | undefined {
  return ONNX_TYPE_NAMES.find((type) => onnxModelFileName(type) === fileName);
}

/**
 * External data file `index` of a model file, as transformers.js asks for them (utils/model-loader.js):
 * `model_q4.onnx_data`, then `model_q4.onnx_data_1`, `_2`, …
 */
export function onnxDataFileName(modelFile: string, index: number): string {
  return index === 0 ? `${modelFile}_data` : `${modelFile}_data_${index}`;
}
