import type { GgufConversionPlan } from '../converters/gguf/convert.js';
import type { GgufInspectReport } from '../inspect/gguf.js';
import type { InspectReport } from '../inspect/hf.js';
import { formatBytes, formatCount, table } from './format.js';

/** The terminal rendering of an inspect report. */
export function renderInspect(report: InspectReport, options: { tensors: boolean }): string {
  const lines: string[] = [];
  lines.push(`${report.path}  (${report.kind})`);
  lines.push(`architecture  ${report.architecture ?? 'unknown'}`);
  const config = report.config;
  if (config !== null) {
    lines.push(
      `config        hidden ${config.hiddenSize}, layers ${config.numLayers}, heads ${config.numHeads} (head ${config.headDim}, rotary ${config.rotaryDims}), ffn ${config.intermediateSize}, vocab ${config.vocabSize}`,
      `              ${config.useParallelResidual ? 'parallel' : 'sequential'} residual, ${config.hiddenAct}, rope base ${config.rotaryBase}, ln eps ${config.layerNormEps}, ${config.tieWordEmbeddings ? 'tied' : 'untied'} output head, max positions ${config.maxPositionEmbeddings}`,
    );
  }
  lines.push(`parameters    ${formatCount(report.parameters)}  (${formatBytes(report.bytes)})`);
  lines.push(
    `by dtype      ${Object.entries(report.bytesByDtype)
      .map(([dtype, bytes]) => `${dtype} ${formatBytes(bytes)}`)
      .join(', ')}`,
  );
  const weightFiles = report.weights.files.map((file) => `${file.file} (${formatBytes(file.bytes)})`).join(', ');
  lines.push(`weights       ${report.weights.format}${report.weights.index ? ` via ${report.weights.index}` : ''}: ${weightFiles}`);
  if (report.skipped.length > 0) {
    const kinds = new Map<string, number>();
    for (const entry of report.skipped) kinds.set(entry.reason, (kinds.get(entry.reason) ?? 0) + 1);
    lines.push(
      `skipped       ${report.skipped.length} non-parameter tensors: ${[...kinds].map(([kind, n]) => `${n}× ${kind}`).join(', ')}`,
    );
  }
  const tokenizer = report.tokenizer;
  if (tokenizer !== null) {
    const special = (['bos', 'eos', 'pad'] as const)
      .map((key) => `${key} ${tokenizer[key].token ?? '-'}=${tokenizer[key].id ?? '-'}`)
      .join(', ');
    lines.push(
      `tokenizer     ${tokenizer.model}${tokenizer.byteLevel ? ' (byte-level)' : ''}, ${formatCount(tokenizer.vocabSize)} ids, ${formatCount(tokenizer.merges)} merges, ${tokenizer.addedTokens.length} added tokens; ${special}`,
    );
  }
  for (const warning of report.warnings) lines.push(`warning       ${warning}`);
  if (options.tensors) {
    const withHash = report.tensors.some((tensor) => tensor.sha256 !== undefined);
    const rows = [...report.tensors, ...report.skipped].map((tensor) => [
      tensor.name,
      tensor.dtype,
      `[${tensor.shape.join(', ')}]`,
      formatCount(tensor.bytes),
      tensor.file,
      ...(withHash ? [tensor.sha256?.slice(0, 16) ?? ''] : []),
    ]);
    lines.push('', table(['tensor', 'dtype', 'shape', 'bytes', 'file', ...(withHash ? ['sha256'] : [])], rows));
  }
  return lines.join('\n');
}

/** The `convert` plan: each tensor's source, GGUF name, type and bytes (and error), then totals by type. */
export function renderConversionPlan(plan: GgufConversionPlan): string {
  const withError = plan.tensors.some((tensor) => tensor.error !== undefined);
  const rows = plan.tensors.map((tensor) => [
    tensor.source,
    tensor.name,
    tensor.type,
    `[${tensor.ne.join(', ')}]`,
    formatCount(tensor.bytes),
    ...(withError && tensor.error !== undefined
      ? [
          tensor.error.rmse === 0 ? '0' : tensor.error.rmse.toExponential(3),
          tensor.error.maxAbsError === 0 ? '0' : tensor.error.maxAbsError.toExponential(3),
          Number.isFinite(tensor.error.sqnrDb) ? tensor.error.sqnrDb.toFixed(2) : tensor.error.sqnrDb > 0 ? 'exact' : '-inf',
          tensor.error.cosineSimilarity.toFixed(6),
        ]
      : []),
  ]);
  const byType = new Map<string, number>();
  let weights = 0;
  for (const tensor of plan.tensors) {
    byType.set(tensor.type, (byType.get(tensor.type) ?? 0) + tensor.bytes);
    weights += tensor.ne.reduce((product, dim) => product * dim, 1);
  }
  const tensorBytes = plan.tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
  const lines = [
    table(['source', 'gguf', 'type', 'ne', 'bytes', ...(withError ? ['rmse', 'max |err|', 'sqnr dB', 'cosine'] : [])], rows),
    '',
    `file type  ${plan.fileType} (general.file_type ${plan.fileTypeId})`,
    `by type    ${[...byType].map(([type, bytes]) => `${type} ${formatBytes(bytes)}`).join(', ')}`,
    `total      ${formatBytes(plan.fileBytes)} (${((8 * tensorBytes) / weights).toFixed(3)} bits per weight)${plan.out ? ` → ${plan.out}` : ' (dry run)'}`,
  ];
  if (withError) {
    let worst: (typeof plan.tensors)[number] | undefined;
    for (const tensor of plan.tensors) {
      if (tensor.error !== undefined && (worst?.error === undefined || tensor.error.sqnrDb < worst.error.sqnrDb)) worst = tensor;
    }
    if (worst?.error !== undefined && Number.isFinite(worst.error.sqnrDb)) {
      lines.push(`worst      ${worst.name} (${worst.type}): SQNR ${worst.error.sqnrDb.toFixed(2)} dB, RMSE ${worst.error.rmse.toExponential(3)}`);
    }
  }
  for (const warning of plan.warnings) lines.push(`warning    ${warning}`);
  return lines.join('\n');
}

export function renderGgufInspect(report: GgufInspectReport, options: { tensors: boolean }): string {
  const lines = [`${report.path}  (GGUF v${report.version}, ${formatBytes(report.fileBytes)})`];
  for (const [key, value] of Object.entries(report.metadata)) {
    const summary = typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as { length?: number; type?: string }) : undefined;
    const shown = summary?.length !== undefined ? `[${summary.length} × ${summary.type}]` : JSON.stringify(value);
    lines.push(`${key.padEnd(40)} ${shown.length > 100 ? `${shown.slice(0, 97)}...` : shown}`);
  }
  lines.push('', table(['type', 'tensors', 'weights', 'bytes', 'bits/weight'], Object.entries(report.types).map(([type, entry]) => [
    type,
    formatCount(entry.tensors),
    formatCount(entry.weights),
    formatCount(entry.bytes),
    ((8 * entry.bytes) / entry.weights).toFixed(3),
  ])));
  lines.push('', `weights ${formatCount(report.weights)}, tensor data ${formatBytes(report.tensorBytes)}, ${report.bitsPerWeight.toFixed(3)} bits per weight`);
  if (options.tensors) {
    lines.push('', table(['tensor', 'type', 'ne', 'bytes', 'offset'], report.tensors.map((tensor) => [tensor.name, tensor.type, `[${tensor.ne.join(', ')}]`, formatCount(tensor.bytes), formatCount(tensor.offset)])));
  }
  return lines.join('\n');
}
