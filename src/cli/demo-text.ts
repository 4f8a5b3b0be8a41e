import { basename } from 'node:path';
import type { DemoResult } from '../demo.js';
import { formatBytes, table } from './format.js';

/** The demo's terminal report: one row per converted file (GGUF) or model file (ONNX). */
export function renderDemo(result: DemoResult): string {
  const rows = result.rows.map((row) => [
    basename(row.model),
    `${row.format} ${row.type}`,
    formatBytes(row.fileBytes),
    `${row.baselinePpl.toFixed(3)} → ${row.candidatePpl.toFixed(3)}`,
    `${row.deltaPplPct.toFixed(3) === '-0.000' ? '+0.000' : `${row.deltaPplPct >= 0 ? '+' : ''}${row.deltaPplPct.toFixed(3)}`}%`,
    row.kldMean === null ? '-' : row.kldMean.toExponential(2),
    `${(100 * row.top1).toFixed(2)}%`,
    `${row.engine}/${row.device}`,
    `${row.convertSeconds.toFixed(1)}+${row.verifySeconds.toFixed(1)} s`,
    row.verdict === 'pass' ? 'pass' : `FAIL: ${row.failed.join('; ')}`,
  ]);
  return [
    table(['model', 'output', 'size', 'ppl (HF → output)', 'Δppl', 'kld', 'top-1', 'engine', 'convert+verify', 'verdict'], rows),
    '',
    `baseline: each HF folder in the reference engine; perplexity text: ${result.text}`,
    ...(result.outDir !== undefined ? [`files kept in ${result.outDir}`] : []),
    `verdict: ${result.verdict}`,
  ].join('\n');
}
