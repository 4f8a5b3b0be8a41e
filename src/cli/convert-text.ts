/** Terminal rendering of ONNX and WebGPU conversion plans (`polyquant convert --to onnx|webgpu`). */
import type { OnnxConversionPlan } from '../converters/onnx/convert.js';
import type { WebGpuConversionPlan } from '../converters/webgpu/convert.js';
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

/**
 * A WebGPU plan: one row per type (records, shards, bytes, bits per weight as MLC counts them), then each
 * type's shards with their records (first and last name), in file-counter order.
 */
export function renderWebGpuConversionPlan(plan: WebGpuConversionPlan): string {
  const rows = plan.models.map((model) => [
    model.type,
    model.folder === '' ? '.' : `${model.folder}/`,
    formatCount(model.records.length),
    formatCount(model.shards.length),
    formatCount(model.diskBytes),
    formatCount(model.paramBytes),
    model.bitsPerParam.toFixed(3),
  ]);
  const lines = [table(['type', 'folder', 'records', 'shards', 'bytes on disk', 'bytes in memory', 'bits/weight'], rows)];
  for (const model of plan.models) {
    lines.push(
      '',
      `${model.type}: ${formatCount(model.parameters)} parameters`,
      table(
        ['shard', 'bytes', 'records', 'first', 'last'],
        model.shards.map((shard) => [
          shard.dataPath,
          formatCount(shard.nbytes),
          formatCount(shard.records.length),
          shard.records[0]?.name ?? '',
          shard.records.length > 1 ? (shard.records[shard.records.length - 1]?.name ?? '') : '',
        ]),
      ),
    );
  }
  const largest = Math.max(0, ...plan.models.flatMap((model) => model.shards.map((shard) => shard.nbytes)));
  lines.push(
    '',
    `storage    float32 ${plan.f32Storage === 'raw' ? 'raw (exact; format "raw")' : 'as bf16 (mlc_llm convert_weight\'s "f32-to-bf16")'}; shards capped at ${plan.shardCapBytes % 2 ** 20 === 0 ? `${plan.shardCapBytes / 2 ** 20} MiB` : `${formatCount(plan.shardCapBytes)} bytes`} (largest ${formatBytes(largest)}: a tensor of half the cap or more gets a shard of its own)`,
    `total      ${formatBytes(plan.models.reduce((sum, model) => sum + model.diskBytes, 0))} of shards${plan.out ? ` → ${plan.out}` : ' (dry run)'}`,
  );
  for (const warning of plan.warnings) lines.push(`warning: ${warning}`);
  return lines.join('\n');
}
