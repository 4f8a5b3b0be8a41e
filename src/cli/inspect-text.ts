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
