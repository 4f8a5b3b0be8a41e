/**
 * `convert --dry-run --error --html FILE`: the measured quantization error of a GGUF conversion as one
 * self-contained page (plot/page.ts): the SQNR of every weight matrix by layer, one series per kind of
 * tensor (token embedding, attention qkv, attention output, MLP up, MLP down, output head) with the ggml
 * type as the marker, so a mixture's choices (q4_k_m's Q6_K layers) show where they land; then the kinds
 * summarised and the worst tensors listed. Charts are drawn by the shared Vega layer (plot/vega.ts).
 *
 * Norms and biases are stored as F32 in every GGUF type, so they reproduce the source exactly; the page
 * counts them instead of drawing a flat line of them. A weight matrix stored exactly (an f16 conversion
 * of f16 weights) is drawn on an "exact" line above the measured ones, since its SQNR is infinite.
 */
import { stat } from 'node:fs/promises';
import type { Spec } from 'vega';
import type { GgufConversionPlan, GgufPlannedTensor } from '../converters/gguf/convert.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { checkOutputFile, refuseOverwritingInputs } from '../io/output.js';
import { type Cell, chartFigure, escapeHtml, htmlPage, htmlTable, note } from '../plot/page.js';
import { AXIS_TEXT_STYLE, FONT_FAMILIES, GRID_COLOR, LEGEND_TEXT_STYLE, RULE_COLOR, renderVegaSvg, SERIES_PALETTE, TITLE_STYLE } from '../plot/vega.js';
import { modelFolderFiles } from '../readers/checkpoint.js';
import { formatBytes } from './format.js';

/** The kinds of weight matrix, in legend order, with the GGUF names (llama.cpp gptneox) that make each. */
const TENSOR_KINDS = [
  { kind: 'token embedding', pattern: /^token_embd\.weight$/ },
  { kind: 'attention qkv', pattern: /^blk\.\d+\.attn_qkv\.weight$/ },
  { kind: 'attention output', pattern: /^blk\.\d+\.attn_output\.weight$/ },
  { kind: 'mlp up', pattern: /^blk\.\d+\.ffn_up\.weight$/ },
  { kind: 'mlp down', pattern: /^blk\.\d+\.ffn_down\.weight$/ },
  { kind: 'output head', pattern: /^output\.weight$/ },
] as const;

/** Marker per ggml type, in order of first appearance in the plan (a mixture rarely has more than three). */
const TYPE_SHAPES = ['circle', 'square', 'diamond', 'triangle-up', 'cross', 'triangle-down', 'wedge'] as const;

/** Pixels between neighbouring kinds' markers within one layer. */
const KIND_DODGE = 5;

/** Worst tensors listed in the table. */
const WORST_LISTED = 12;

/** x positions before and after the blocks. */
const EMBEDDING_POSITION = 'embd';
const HEAD_POSITION = 'head';

export interface ConversionErrorPageOptions {
  /** The model converted (shown in the header). */
  readonly model: string;
}

/**
 * Checks `--html FILE` before any work, as --json and --markdown are checked elsewhere: the page is drawn
 * from the measured error, so it needs `--to gguf --dry-run --error`; the file's folder must exist and be
 * writable, and the page may not overwrite the model or the other files read (the imatrix).
 */
export async function checkConversionErrorPage(
  path: string,
  flags: { readonly to: string; readonly dryRun: boolean; readonly error: boolean; readonly model: string; readonly inputFiles: readonly string[] },
): Promise<void> {
  if (flags.to !== 'gguf' || !flags.dryRun || !flags.error) {
    throw new PolyquantError(ERROR_CODES.USAGE, '--html draws the quantization error of a GGUF conversion, which is measured in a dry run', {
      hint: 'add --dry-run --error (with --to gguf, the default)',
    });
  }
  const output = await checkOutputFile(path, '--html');
  const isFolder = (await stat(flags.model).catch(() => undefined))?.isDirectory() === true;
  await refuseOverwritingInputs([output], [flags.model, ...(isFolder ? await modelFolderFiles(flags.model) : []), ...flags.inputFiles]);
}

interface SqnrPoint {
  readonly tensor: string;
  readonly kind: string;
  readonly type: string;
  readonly position: string;
  readonly sqnr: number | null;
  readonly plotted: number;
}

/** Renders the page from a dry-run plan whose tensors carry `error` (convertToGguf with `error: true`). */
export async function renderConversionErrorHtml(plan: GgufConversionPlan, options: ConversionErrorPageOptions): Promise<string> {
  const measured = plan.tensors.filter((tensor) => tensor.error !== undefined);
  const weights = plan.tensors.reduce((sum, tensor) => sum + tensor.ne.reduce((product, dim) => product * dim, 1), 0);
  const tensorBytes = plan.tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
  const parts = [
    `<h1>polyquant convert: quantization error</h1>`,
    `<p class="subtitle">${escapeHtml(options.model)} as GGUF ${escapeHtml(plan.fileType)} (general.file_type ${plan.fileTypeId}): ${escapeHtml(formatBytes(plan.fileBytes))}, ${((8 * tensorBytes) / Math.max(1, weights)).toFixed(3)} bits per weight; ${measured.length} of ${plan.tensors.length} tensors measured against their float32 source.</p>`,
  ];
  if (measured.length === 0) {
    parts.push(note('The plan holds no measured tensors: run convert with --dry-run --error.'));
  } else {
    parts.push('<h2 id="sqnr-chart">SQNR by layer</h2>', await sqnrChart(measured), kindsSection(measured), worstSection(measured));
  }
  for (const warning of plan.warnings) parts.push(note(`warning: ${warning}`));
  parts.push(
    '<footer>Made by polyquant convert --dry-run --error. SQNR = 10·log10(Σx² / Σ(x − x̂)²) of each tensor against its float32 source; higher is better. The page is self-contained: no script, and nothing is fetched.</footer>',
  );
  return htmlPage({ title: `polyquant convert --error: ${plan.fileType}`, body: parts.join('\n') });
}

function kindOf(name: string): string | undefined {
  return TENSOR_KINDS.find((entry) => entry.pattern.test(name))?.kind;
}

function blockOf(name: string): number | undefined {
  const match = /^blk\.(\d+)\./.exec(name);
  return match === null ? undefined : Number(match[1]);
}

function sqnrText(sqnr: number): string {
  if (Number.isFinite(sqnr)) return sqnr.toFixed(2);
  return sqnr > 0 ? 'exact' : '−∞';
}

const scientific = (value: number): string => (value === 0 ? '0' : value.toExponential(3));

async function sqnrChart(measured: readonly GgufPlannedTensor[]): Promise<string> {
  const matrices = measured.filter((tensor) => kindOf(tensor.name) !== undefined);
  const others = measured.length - matrices.length;
  const othersExact = measured.filter((tensor) => kindOf(tensor.name) === undefined && tensor.error?.sqnrDb === Number.POSITIVE_INFINITY).length;
  const othersNote =
    others === 0 ? '' : ` ${others} other tensors (norms and biases${othersExact === others ? ', stored exactly' : ''}) are not drawn; the tables below include them.`;
  if (matrices.length === 0) return note(`No weight matrix was measured.${othersNote}`);
  const blocks = Math.max(-1, ...matrices.map((tensor) => blockOf(tensor.name) ?? -1)) + 1;
  const positions = [EMBEDDING_POSITION, ...Array.from({ length: blocks }, (_, block) => String(block)), HEAD_POSITION];
  const finite = matrices.map((tensor) => tensor.error?.sqnrDb as number).filter((sqnr) => Number.isFinite(sqnr));
  const low = finite.length > 0 ? Math.min(...finite) : 0;
  const high = finite.length > 0 ? Math.max(...finite) : 40;
  const margin = Math.max(2, (high - low) * 0.08);
  const exactLine = high + 2 * margin;
  const bottomLine = low - 2 * margin;
  const points: SqnrPoint[] = matrices.map((tensor) => {
    const sqnr = tensor.error?.sqnrDb as number;
    const block = blockOf(tensor.name);
    return {
      tensor: tensor.name,
      kind: kindOf(tensor.name) as string,
      type: tensor.type,
      position: block !== undefined ? String(block) : tensor.name.startsWith('token_embd') ? EMBEDDING_POSITION : HEAD_POSITION,
      sqnr: Number.isFinite(sqnr) ? sqnr : null,
      plotted: Number.isFinite(sqnr) ? sqnr : sqnr > 0 ? exactLine : bottomLine,
    };
  });
  const hasExact = points.some((point) => point.plotted === exactLine && point.sqnr === null);
  const hasZeroSignal = points.some((point) => point.plotted === bottomLine && point.sqnr === null);
  const kinds = TENSOR_KINDS.map((entry) => entry.kind).filter((kind) => points.some((point) => point.kind === kind));
  const types = [...new Set(points.map((point) => point.type))];
  // Kinds side by side within a layer (a few pixels apart): their SQNRs often coincide to within a marker.
  const dodge = Object.fromEntries(kinds.map((kind, index) => [kind, (index - (kinds.length - 1) / 2) * KIND_DODGE]));
  const guides = [...(hasExact ? [{ sqnr: exactLine, label: 'exact (SQNR ∞)' }] : []), ...(hasZeroSignal ? [{ sqnr: bottomLine, label: 'zero signal (SQNR −∞)' }] : [])];
  const spec = {
    $schema: 'https://vega.github.io/schema/vega/v6.json',
    width: Math.max(640, Math.min(860, positions.length * 40)),
    height: 320,
    padding: 8,
    autosize: { type: 'pad' },
    background: '#ffffff',
    title: {
      text: 'Quantization SQNR of each weight matrix, by layer',
      subtitle: 'dB against the float32 source, higher is better · colour: kind of tensor · marker: ggml type',
      ...TITLE_STYLE,
    },
    data: [
      { name: 'points', values: points.map((point) => ({ ...point, dodge: dodge[point.kind] ?? 0 })) },
      { name: 'blocks', source: 'points', transform: [{ type: 'filter', expr: `datum.position !== '${EMBEDDING_POSITION}' && datum.position !== '${HEAD_POSITION}'` }] },
      { name: 'guides', values: guides },
    ],
    scales: [
      { name: 'x', type: 'point', domain: positions, range: 'width', padding: 0.6 },
      { name: 'y', type: 'linear', domain: [bottomLine - margin, exactLine + margin], range: 'height', nice: true, zero: false },
      { name: 'color', type: 'ordinal', domain: kinds, range: kinds.map((kind) => SERIES_PALETTE[TENSOR_KINDS.findIndex((entry) => entry.kind === kind) % SERIES_PALETTE.length]?.color) },
      { name: 'shape', type: 'ordinal', domain: types, range: types.map((_, index) => TYPE_SHAPES[index % TYPE_SHAPES.length]) },
    ],
    axes: [
      { orient: 'bottom', scale: 'x', title: 'layer (block)', grid: true, gridColor: GRID_COLOR, ...AXIS_TEXT_STYLE },
      { orient: 'left', scale: 'y', title: 'SQNR (dB)', grid: true, gridColor: GRID_COLOR, tickCount: 8, ...AXIS_TEXT_STYLE },
    ],
    legends: [
      { title: 'tensor', fill: 'color', symbolType: 'circle', orient: 'right', labelLimit: 0, ...LEGEND_TEXT_STYLE },
      { title: 'type', shape: 'shape', orient: 'right', labelLimit: 0, encode: { symbols: { update: { fill: { value: '#666666' }, stroke: { value: '#666666' } } } }, ...LEGEND_TEXT_STYLE },
    ],
    marks: [
      {
        type: 'rule',
        from: { data: 'guides' },
        encode: { enter: { x: { value: 0 }, x2: { signal: 'width' }, y: { scale: 'y', field: 'sqnr' }, stroke: { value: RULE_COLOR }, strokeDash: { value: [4, 4] } } },
      },
      {
        type: 'text',
        from: { data: 'guides' },
        encode: {
          enter: {
            x: { signal: 'width', offset: -4 },
            y: { scale: 'y', field: 'sqnr', offset: -4 },
            text: { field: 'label' },
            align: { value: 'right' },
            baseline: { value: 'bottom' },
            fill: { value: '#777777' },
            font: { value: FONT_FAMILIES },
            fontSize: { value: 11 },
          },
        },
      },
      {
        type: 'group',
        from: { facet: { name: 'series', data: 'blocks', groupby: 'kind' } },
        marks: [
          {
            type: 'line',
            from: { data: 'series' },
            encode: {
              enter: {
                x: { scale: 'x', field: 'position', offset: { field: 'dodge' } },
                y: { scale: 'y', field: 'plotted' },
                stroke: { scale: 'color', field: 'kind' },
                strokeWidth: { value: 1.5 },
                strokeOpacity: { value: 0.6 },
              },
            },
          },
        ],
      },
      {
        type: 'symbol',
        name: 'sqnr-points',
        from: { data: 'points' },
        encode: {
          enter: {
            x: { scale: 'x', field: 'position', offset: { field: 'dodge' } },
            y: { scale: 'y', field: 'plotted' },
            shape: { scale: 'shape', field: 'type' },
            size: { value: 70 },
            fill: { scale: 'color', field: 'kind' },
            stroke: { value: '#ffffff' },
            strokeWidth: { value: 0.75 },
          },
        },
      },
    ],
  } as unknown as Spec;
  const svg = await renderVegaSvg(spec, { idPrefix: 'sqnr' });
  return chartFigure(
    'sqnr',
    svg,
    `Each weight matrix once: the token embedding left of block 0, the output head right of the last block; kinds are set slightly apart where their values coincide. A mixture such as q4_k_m keeps some layers at a wider type; their markers sit higher.${othersNote}`,
    { points: points.length },
  );
}

function kindsSection(measured: readonly GgufPlannedTensor[]): string {
  const groups = new Map<string, GgufPlannedTensor[]>();
  for (const tensor of measured) {
    const kind = kindOf(tensor.name) ?? (tensor.ne.length === 1 ? (tensor.name.endsWith('.bias') ? 'biases' : 'norms') : 'other');
    groups.set(kind, [...(groups.get(kind) ?? []), tensor]);
  }
  const order = [...TENSOR_KINDS.map((entry) => entry.kind), 'norms', 'biases', 'other'];
  const rows = order
    .filter((kind) => groups.has(kind))
    .map((kind): Cell[] => {
      const tensors = groups.get(kind) as GgufPlannedTensor[];
      const sqnrs = tensors.map((tensor) => tensor.error?.sqnrDb as number);
      const finite = sqnrs.filter((sqnr) => Number.isFinite(sqnr));
      const worst = Math.min(...sqnrs);
      return [
        kind,
        String(tensors.length),
        [...new Set(tensors.map((tensor) => tensor.type))].join(', '),
        sqnrText(worst),
        finite.length > 0 ? (finite.reduce((sum, sqnr) => sum + sqnr, 0) / finite.length).toFixed(2) : sqnrText(worst),
        sqnrText(Math.max(...sqnrs)),
      ];
    });
  return ['<h2 id="kinds">By kind of tensor</h2>', htmlTable(['kind', 'tensors', 'types', 'SQNR min (dB)', 'mean', 'max'], rows, { id: 'kinds-table', numeric: [1, 3, 4, 5] })].join('\n');
}

function worstSection(measured: readonly GgufPlannedTensor[]): string {
  const lossy = measured.filter((tensor) => tensor.error?.sqnrDb !== Number.POSITIVE_INFINITY);
  const exact = measured.length - lossy.length;
  const worst = [...lossy].sort((a, b) => (a.error?.sqnrDb as number) - (b.error?.sqnrDb as number) || (a.name < b.name ? -1 : 1)).slice(0, WORST_LISTED);
  const parts = [`<h2 id="worst">Worst tensors</h2>`];
  if (worst.length === 0) {
    parts.push(note('Every tensor reproduces its source exactly.'));
    return parts.join('\n');
  }
  const rows = worst.map((tensor): Cell[] => {
    const error = tensor.error as NonNullable<GgufPlannedTensor['error']>;
    return [
      { text: tensor.name, className: 'path' },
      { text: tensor.source, className: 'path' },
      tensor.type,
      `[${tensor.ne.join(', ')}]`,
      { text: sqnrText(error.sqnrDb), data: { value: String(error.sqnrDb) } },
      scientific(error.rmse),
      scientific(error.maxAbsError),
      error.cosineSimilarity.toFixed(6),
    ];
  });
  parts.push(
    htmlTable(['tensor', 'source', 'type', 'ne', 'SQNR (dB)', 'RMSE', 'max |err|', 'cosine'], rows, { id: 'worst-table', numeric: [4, 5, 6, 7] }),
    note(`The ${worst.length} lowest SQNRs of ${lossy.length} lossy tensors${exact > 0 ? `; ${exact} more are stored exactly` : ''}.`),
  );
  return parts.join('\n');
}
