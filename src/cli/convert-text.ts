/** Terminal rendering of an ONNX conversion plan (`polyquant convert --to onnx`). */
import type { OnnxConversionPlan } from '../converters/onnx/convert.js';
import { formatBytes, formatCount, table } from './format.js';

export function renderOnnxConversionPlan(plan: OnnxConversionPlan): string {
  const { options } = plan;
  const rows = plan.models.map((model) => [
    model.type,
    model.file,
    String(model.nodes),
    formatCount(model.initializers.length),
    model.dataFiles.map((file) => `${file.name} ${formatBytes(file.bytes)}`).join(', '),
    model.bitsPerWeight.toFixed(3),
  ]);
  const lines = [
    table(['type', 'model', 'nodes', 'initializers', 'external data', 'bits/weight'], rows),
    '',
    `attention  ${options.attention}${options.attention === 'gqa' ? ' (com.microsoft GroupQueryAttention; right padding only)' : ' (opset-21 ops)'}`,
    `quantized  MatMulNBits block ${options.blockSize}, ${options.symmetric ? 'symmetric' : 'asymmetric'}, accuracy_level ${options.accuracyLevel}; q8 as ${options.q8Format === 'integer' ? 'DynamicQuantizeLinear + MatMulInteger' : 'MatMulNBits bits=8'}; head ${options.keepHead ? 'kept in float' : 'quantized'}`,
    `total      ${formatBytes(plan.models.reduce((sum, model) => sum + model.weightBytes, 0))} of weights${plan.out ? ` → ${plan.out}` : ' (dry run)'}`,
  ];
  for (const warning of plan.warnings) lines.push(`warning: ${warning}`);
  return lines.join('\n');
}
