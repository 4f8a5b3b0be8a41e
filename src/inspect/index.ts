/**
 * `polyquant inspect` over any input: an HF folder, a .safetensors / .bin file, a GGUF file (told by its
 * magic, whatever the extension), ONNX — a folder whose onnx/ subfolder (or itself) holds .onnx files,
 * or one .onnx file — or a WebGPU folder (an MLC tensor cache: tensor-cache.json or ndarray-cache.json).
 */
import { stat } from 'node:fs/promises';
import { extname, resolve } from 'node:path';
import { ioError } from '../io/file.js';
import { type GgufInspectReport, inspectGguf, isGgufFile } from './gguf.js';
import { type InspectOptions, type InspectReport, inspectHf } from './hf.js';
import { inspectOnnxFile, inspectOnnxFolder, type OnnxInspectReport, onnxFolderModels } from './onnx.js';
import { inspectWebGpuFolder, type WebGpuInspectReport } from './webgpu.js';
import { isWebGpuFolder } from '../converters/webgpu/read.js';

export type AnyInspectReport = InspectReport | GgufInspectReport | OnnxInspectReport | WebGpuInspectReport;

export async function inspectPath(path: string, options: InspectOptions = {}): Promise<AnyInspectReport> {
  const absolute = resolve(path);
  const info = await stat(absolute).catch((error: unknown) => {
    throw ioError(absolute, 'open the input', error);
  });
  // A .gguf file goes to the GGUF reader whatever its bytes, so a damaged one is reported as a bad GGUF
  // rather than as "not a model folder"; any other file is told by its magic.
  if (!info.isDirectory() && (extname(absolute).toLowerCase() === '.gguf' || (await isGgufFile(absolute)))) return inspectGguf(absolute);
  // ONNX is told by its files, never by config.json, which a transformers.js folder carries too.
  if (!info.isDirectory() && extname(absolute).toLowerCase() === '.onnx') return inspectOnnxFile(absolute);
  if (info.isDirectory() && (await onnxFolderModels(absolute)).length > 0) return inspectOnnxFolder(absolute);
  // A tensor cache manifest makes a WebGPU folder, whatever else (tokenizer files) lies beside it.
  if (info.isDirectory() && (await isWebGpuFolder(absolute))) return inspectWebGpuFolder(absolute, { onProgress: options.onProgress });
  return inspectHf(absolute, options);
}
