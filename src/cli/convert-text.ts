/**
 * What `polyquant convert` prints: the whole plan (every tensor or shard) with --dry-run or --verbose,
 * a few summary lines after a conversion (the file, its type, size, tensors, seconds) with the warnings on
 * stderr, nothing but errors with --quiet; the plan as JSON with --json. The plan renderers for ONNX and
 * WebGPU live here (GGUF's is inspect-text.ts `renderConversionPlan`).
 */
import type { GgufConversionPlan } from '../converters/gguf/convert.js';
import type { OnnxConversionPlan } from '../converters/onnx/convert.js';
import type { WebGpuConversionPlan } from '../converters/webgpu/convert.js';
import { formatBytes, formatCount, table } from './format.js';
import { convertReportText } from './json-reports.js';
import type { CliIO } from './main.js';

/** How much `convert` says: `--quiet`, the default, or `--verbose`. */
export interface ConvertOutputOptions {
  readonly json: boolean;
  /** The output format (`--to`), named in the JSON report. */
  readonly format?: string;
  readonly quiet: boolean;
  readonly verbose: boolean;
  readonly dryRun: boolean;
  /** Wall-clock seconds the conversion took. */
  readonly seconds: number;
}

/**
 * Prints a conversion's result: JSON when asked (also with --quiet: it is the output asked for), nothing
 * with --quiet, the plan with --dry-run or --verbose (its warnings in it), else the summary on stdout and
 * each warning on stderr.
 */
export function printConversion<P extends { readonly warnings: readonly string[] }>(
  io: CliIO,
  plan: P,
  options: ConvertOutputOptions,
  render: { readonly plan: (plan: P) => string; readonly summary: (plan: P, seconds: number) => string },
): void {
  if (options.json) {
    // polyquant.convert/1: the plan in snake_case with its schema and provenance (json-reports.ts).
    io.stdout(convertReportText(options.format ?? 'gguf', plan, options.seconds));
    return;
  }
  if (options.quiet) return;
  if (options.dryRun || options.verbose) {
    io.stdout(`${render.plan(plan)}\n`);
    return;
  }
  io.stdout(`${render.summary(plan, options.seconds)}\n`);
  for (const warning of plan.warnings) io.stderr(`warning: ${warning}\n`);
}

const seconds = (value: number): string => `${value < 10 ? value.toFixed(1) : Math.round(value)} s`;

/** A written GGUF in five lines. */
export function renderGgufSummary(plan: GgufConversionPlan, elapsed: number): string {
  const byType = new Map<string, number>();
  let weights = 0;
  for (const tensor of plan.tensors) {
    byType.set(tensor.type, (byType.get(tensor.type) ?? 0) + 1);
    weights += tensor.ne.reduce((product, dim) => product * dim, 1);
  }
  const tensorBytes = plan.tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
  const from = plan.inputFormat === 'gguf' ? 'requantized from a GGUF' : 'from an HF folder';
  return [
    `wrote      ${plan.out ?? '(dry run)'}`,
    `file type  ${plan.fileType} (general.file_type ${plan.fileTypeId}), ${from}`,
    `tensors    ${plan.tensors.length}: ${[...byType].map(([type, count]) => `${type} ${count}`).join(', ')}`,
    `size       ${formatBytes(plan.fileBytes)} (${((8 * tensorBytes) / Math.max(1, weights)).toFixed(3)} bits per weight)`,
    `time       ${seconds(elapsed)} (--verbose lists every tensor)`,
  ].join('\n');
}

/** A written ONNX folder: one line per model. */
export function renderOnnxSummary(plan: OnnxConversionPlan, elapsed: number): string {
  return [
    `wrote      ${plan.out ?? '(dry run)'}`,
    ...plan.models.map(
      (model) =>
        `${model.type.padEnd(10)} ${model.file}, ${formatCount(model.initializers.length)} initializers, ${formatBytes(model.weightBytes)} (${model.bitsPerWeight.toFixed(3)} bits per weight)`,
    ),
    `time       ${seconds(elapsed)} (--verbose shows the plan)`,
  ].join('\n');
}

/** A written WebGPU folder: one line per type. */
export function renderWebGpuSummary(plan: WebGpuConversionPlan, elapsed: number): string {
  return [
    `wrote      ${plan.out ?? '(dry run)'}`,
    ...plan.models.map(
      (model) =>
        `${model.type.padEnd(10)} ${model.folder === '' ? '.' : `${model.folder}/`}: ${formatCount(model.records.length)} records in ${formatCount(model.shards.length)} shard(s), ${formatBytes(model.diskBytes)} (${model.bitsPerParam.toFixed(3)} bits per weight)`,
    ),
    `time       ${seconds(elapsed)} (--verbose lists every shard)`,
  ].join('\n');
}

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
