import type { NeoXConfig } from '../arch/gpt-neox.js';
import type { GgufConversionPlan } from '../converters/gguf/convert.js';
import type { OnnxDim, OnnxValueSummary } from '../converters/onnx/read.js';
import type { GgufInspectReport } from '../inspect/gguf.js';
import type { InspectReport } from '../inspect/hf.js';
import { INSPECT_ONNX_SCHEMA, type OnnxInspectModel, type OnnxInspectReport, type OnnxWeightFormat } from '../inspect/onnx.js';
import { INSPECT_WEBGPU_SCHEMA, type WebGpuInspectReport } from '../inspect/webgpu.js';
import type { TokenizerSummary } from '../readers/tokenizer.js';
import { formatBytes, formatCount, table } from './format.js';

/** The terminal rendering of an inspect report (HF inputs; ONNX and WebGPU reports go to their own renderers). */
export function renderInspect(report: InspectReport | OnnxInspectReport | WebGpuInspectReport, options: { tensors: boolean }): string {
  if (report.schema === INSPECT_ONNX_SCHEMA) return renderOnnxInspect(report, options);
  if (report.schema === INSPECT_WEBGPU_SCHEMA) return renderWebGpuInspect(report, options);
  return renderHfInspect(report, options);
}

function renderHfInspect(report: InspectReport, options: { tensors: boolean }): string {
  const lines: string[] = [];
  lines.push(`${report.path}  (${report.kind})`);
  lines.push(`architecture  ${report.architecture ?? 'unknown'}`);
  if (report.config !== null) lines.push(...configLines(report.config));
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
  if (report.tokenizer !== null) lines.push(tokenizerLine(report.tokenizer));
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

function configLines(config: NeoXConfig): string[] {
  return [
    `config        hidden ${config.hiddenSize}, layers ${config.numLayers}, heads ${config.numHeads} (head ${config.headDim}, rotary ${config.rotaryDims}), ffn ${config.intermediateSize}, vocab ${config.vocabSize}`,
    `              ${config.useParallelResidual ? 'parallel' : 'sequential'} residual, ${config.hiddenAct}, rope base ${config.rotaryBase}, ln eps ${config.layerNormEps}, ${config.tieWordEmbeddings ? 'tied' : 'untied'} output head, max positions ${config.maxPositionEmbeddings}`,
  ];
}

function tokenizerLine(tokenizer: TokenizerSummary): string {
  const special = (['bos', 'eos', 'pad'] as const).map((key) => `${key} ${tokenizer[key].token ?? '-'}=${tokenizer[key].id ?? '-'}`).join(', ');
  return `tokenizer     ${tokenizer.model}${tokenizer.byteLevel ? ' (byte-level)' : ''}, ${formatCount(tokenizer.vocabSize)} ids, ${formatCount(tokenizer.merges)} merges, ${tokenizer.addedTokens.length} added tokens; ${special}`;
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

/** An ONNX folder or file: the folder's config and tokenizer, then one section per model file. */
export function renderOnnxInspect(report: OnnxInspectReport, options: { tensors: boolean }): string {
  const lines: string[] = [];
  const count = report.models.length;
  lines.push(`${report.path}  (${report.kind === 'onnx-folder' ? `ONNX folder, ${count} model${count === 1 ? '' : 's'}` : 'ONNX model'})`);
  if (report.kind === 'onnx-folder') {
    lines.push(`architecture  ${report.architecture ?? 'unknown'}`);
    if (report.config !== null) lines.push(...configLines(report.config));
    if (report.configParameters !== null) lines.push(`parameters    ${formatCount(report.configParameters)} (by config.json)`);
    if (report.tokenizer !== null) lines.push(tokenizerLine(report.tokenizer));
    if (report.genai !== null) lines.push(`genai         ${report.genai.filename}${report.genai.exists ? '' : ' (missing)'}`);
  }
  for (const warning of report.warnings) lines.push(`warning       ${warning}`);
  for (const model of report.models) lines.push('', ...onnxModelLines(model, options));
  return lines.join('\n');
}

function onnxModelLines(model: OnnxInspectModel, options: { tensors: boolean }): string[] {
  const external = model.dataFiles.reduce((sum, file) => sum + file.bytes, 0);
  const lines = [
    `${model.file}  (${model.type ?? 'other'}; ${formatBytes(model.fileBytes)} graph${model.dataFiles.length > 0 ? ` + ${formatBytes(external)} external data` : ''})`,
    `onnx          IR ${model.irVersion}; opsets ${model.opsets.map((opset) => `${opset.domain} ${opset.version}`).join(', ')}; producer ${[model.producer.name, model.producer.version].filter((part) => part !== '').join(' ') || '-'}`,
  ];
  const metadata = Object.entries(model.metadata);
  if (metadata.length > 0) lines.push(`metadata      ${metadata.map(([key, value]) => `${key}=${value}`).join(', ')}`);
  const values = (label: string, list: readonly OnnxValueSummary[]): void => {
    for (const [index, text] of groupIndexed(list).entries()) lines.push(`${(index === 0 ? label : '').padEnd(14)}${text}`);
  };
  values('inputs', model.inputs);
  values('outputs', model.outputs);
  const domains = [...new Set(model.ops.map((op) => op.domain))];
  lines.push(
    `nodes         ${formatCount(model.nodes)}: ${domains
      .map((domain) => `${domain} ${model.ops.filter((op) => op.domain === domain).map((op) => `${op.opType} ${op.count}`).join(', ')}`)
      .join('; ')}`,
  );
  for (const file of model.dataFiles) {
    lines.push(`data          ${file.location}  ${formatCount(file.bytes)} bytes (${formatBytes(file.bytes)}): ${file.tensors} tensors, ${formatCount(file.tensorBytes)} bytes of tensor data`);
  }
  lines.push(
    `weights       ${formatCount(model.parameters)} parameters in ${formatBytes(model.weightBytes)}: ${model.bitsPerWeight.toFixed(3)} bits per weight` +
      notCountedText(model),
  );
  lines.push(
    '',
    table(
      ['weight format', 'count', 'parameters', 'bytes', 'bits/weight'],
      model.formats.map((format) => [describeFormat(format), formatCount(format.count), formatCount(format.parameters), formatCount(format.bytes), format.bitsPerWeight.toFixed(3)]),
    ),
  );
  for (const warning of model.warnings) lines.push(`warning       ${warning}`);
  if (options.tensors) {
    lines.push(
      '',
      table(
        ['tensor', 'role', 'type', 'dims', 'bytes', 'stored'],
        model.tensors.map((tensor) => [
          tensor.name,
          tensor.role,
          tensor.dataType,
          `[${tensor.dims.join(', ')}]`,
          formatCount(tensor.bytes),
          tensor.storage === 'inline' ? 'inline' : `${tensor.storage.location} @ ${tensor.storage.offset}`,
        ]),
      ),
    );
  }
  return lines;
}

function notCountedText(model: OnnxInspectModel): string {
  const { rotaryTables, constants } = model.notCounted;
  const parts = [
    ...(rotaryTables.tensors > 0 ? [`${rotaryTables.tensors} rotary tables ${formatBytes(rotaryTables.bytes)}`] : []),
    ...(constants.tensors > 0 ? [`${constants.tensors} constants ${formatBytes(constants.bytes)}`] : []),
  ];
  return parts.length > 0 ? `; not counted: ${parts.join(', ')}` : '';
}

function describeFormat(format: OnnxWeightFormat): string {
  if (format.format === 'MatMulNBits') {
    return `MatMulNBits ${format.bits}-bit, block ${format.blockSize}, accuracy_level ${format.accuracyLevel}, ${format.symmetric ? 'symmetric' : 'zero points'}, ${format.scaleType} scales`;
  }
  if (format.format === 'MatMulInteger') return `MatMulInteger ${format.weightType}, ${format.granularity}`;
  return `float ${format.dataType}`;
}

function formatDims(dims: readonly OnnxDim[]): string {
  return `[${dims.map((dim) => (dim === null ? '?' : String(dim))).join(', ')}]`;
}

/**
 * Inputs and outputs, one per line, with per-layer runs folded: `past_key_values.{0..31}.key FLOAT [...]`
 * for names that differ only in their first number and share type and shape.
 */
function groupIndexed(list: readonly OnnxValueSummary[]): string[] {
  const groups: { pattern: string; indices: number[]; value: OnnxValueSummary }[] = [];
  for (const value of list) {
    const match = /\d+/.exec(value.name);
    const pattern = match === null ? value.name : `${value.name.slice(0, match.index)}{}${value.name.slice(match.index + match[0].length)}`;
    const signature = `${value.elemType} ${formatDims(value.dims)}`;
    const group = match === null ? undefined : groups.find((entry) => entry.pattern === pattern && `${entry.value.elemType} ${formatDims(entry.value.dims)}` === signature);
    if (group !== undefined && match !== null) group.indices.push(Number(match[0]));
    else groups.push({ pattern, indices: match === null ? [] : [Number(match[0])], value });
  }
  return groups.map(({ pattern, indices, value }) => {
    const contiguous = indices.every((index, position) => position === 0 || index === (indices[position - 1] as number) + 1);
    const name =
      indices.length <= 1 ? value.name : pattern.replace('{}', contiguous ? `{${indices[0]}..${indices[indices.length - 1]}}` : `{${indices.join(',')}}`);
    return `${name}  ${value.elemType} ${formatDims(value.dims)}`;
  });
}

/** A WebGPU folder: quantization, model config, manifests, shards and their hashes, records by dtype, bits per weight. */
export function renderWebGpuInspect(report: WebGpuInspectReport, options: { tensors: boolean }): string {
  const lines = [`${report.path}  (WebGPU folder${report.quantization === null ? '' : `, ${report.quantization}`})`];
  const config = report.modelConfig;
  if (config !== null) {
    const field = (key: string): string => (config[key] === undefined ? '?' : String(config[key]));
    lines.push(
      `model         ${report.modelType ?? 'unknown'}: hidden ${field('hidden_size')}, layers ${field('num_hidden_layers')}, heads ${field('num_attention_heads')} (head ${field('head_dim')}), ffn ${field('intermediate_size')}, vocab ${field('vocab_size')}`,
      `              rotary ${field('rotary_pct')} base ${field('position_embedding_base')}, context ${field('context_window_size')}, ${config['use_parallel_residual'] === false ? 'sequential' : 'parallel'} residual, ffn out ${field('ffn_out_dtype')}`,
    );
  }
  const twin = { identical: 'ndarray-cache.json identical', different: 'ndarray-cache.json DIFFERS', absent: 'no ndarray-cache.json', only: 'legacy name only' }[report.legacyManifest];
  lines.push(`manifest      ${report.manifest} (${twin}${report.b16Manifest ? ', tensor-cache-b16.json' : ''}): ${formatCount(report.records)} records`);
  const { shards } = report;
  const hashes = (counts: WebGpuInspectReport['shards']['sha256']): string =>
    (['ok', 'mismatch', 'absent'] as const).filter((status) => counts[status] > 0).map((status) => `${status} ${counts[status]}`).join(', ') || '-';
  lines.push(
    `shards        ${shards.count} file${shards.count === 1 ? '' : 's'}, ${formatCount(shards.bytes)} bytes (${formatBytes(shards.bytes)}), largest ${formatBytes(shards.largest)}; sha256 ${hashes(shards.sha256)}; md5sum ${hashes(shards.md5)}`,
  );
  const bits = report.bitsPerWeight === null ? 'bits per weight unknown' : `${report.bitsPerWeight.toFixed(3)} bits per weight`;
  const stated = typeof report.metadata['BitsPerParam'] === 'number' ? ` (manifest says ${(report.metadata['BitsPerParam'] as number).toFixed(3)})` : '';
  lines.push(
    `weights       ${report.parameters === null ? '?' : formatCount(report.parameters)} parameters in ${formatBytes(report.memoryBytes)} (${formatBytes(report.diskBytes)} on disk): ${bits}${stated}`,
  );
  if (report.tokenizerFiles.length > 0) {
    lines.push(`tokenizer     ${report.tokenizerFiles.map((file) => `${file.name}${file.exists ? '' : ' (missing)'}`).join(', ')}`);
  }
  lines.push(
    '',
    table(
      ['dtype', 'format', 'records', 'elements', 'bytes'],
      report.byDtype.map((group) => [group.dtype, group.format, formatCount(group.records), formatCount(group.elements), formatCount(group.bytes)]),
    ),
  );
  for (const warning of report.warnings) lines.push(`warning       ${warning}`);
  if (options.tensors) {
    lines.push(
      '',
      table(
        ['tensor', 'dtype', 'format', 'shape', 'bytes', 'shard', 'offset'],
        report.tensors.map((tensor) => [tensor.name, tensor.dtype, tensor.format, `[${tensor.shape.join(', ')}]`, formatCount(tensor.nbytes), tensor.dataPath, formatCount(tensor.byteOffset)]),
      ),
      '',
      table(
        ['shard', 'bytes', 'records', 'sha256', 'md5sum'],
        shards.files.map((file) => [file.dataPath, formatCount(file.nbytes), String(file.records), file.sha256, file.md5]),
      ),
    );
  }
  return lines.join('\n');
}
