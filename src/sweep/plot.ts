/**
 * The sweep's Pareto plot: bits per weight (x, linear) against mean KLD to the baseline (y, log), one
 * series per format, each cell labelled with its type, the Pareto front of each format drawn as a line,
 * cells that failed a threshold hollow and the recommendation ringed.
 *
 * Rendering, fonts, colours and the PNG are the project's plotting layer (plot/vega.ts): a Vega spec to an
 * SVG string with no DOM, rasterised by resvg. The SVG is a pure function of the points: Vega's scenegraph
 * depends on the spec and data alone, and the points are sorted before they reach it. The PNG is a
 * function of the SVG and the fonts installed.
 */

import type { Spec } from 'vega';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import {
  AXIS_TEXT_STYLE,
  compareStrings,
  decadeTicks,
  FONT_FAMILIES,
  GRID_COLOR,
  LEGEND_TEXT_STYLE,
  renderVegaSvg,
  SERIES_PALETTE,
  TITLE_STYLE,
} from '../plot/vega.js';

export { type PngOptions, svgToPng } from '../plot/vega.js';

export interface ParetoPoint {
  /** `gguf`, `onnx`, `webgpu` or `simulate` (any other name gets a colour after these). */
  readonly format: string;
  /** The cell's quantization type within its format (`q4_k_m`, `q4f16`, `q4f16_1` …). */
  readonly type: string;
  readonly bitsPerWeight: number;
  /** Mean KL divergence from the baseline, in nats; 0 for a lossless cell. */
  readonly kldMean: number;
  /** Whether the cell passed every threshold of the sweep. */
  readonly passed: boolean;
  /** The sweep's recommendation (at most one cell). */
  readonly recommended: boolean;
}

export interface ParetoSvgOptions {
  readonly title?: string;
}

/** The formats the sweep knows, in the order their series are drawn and listed, with a colour and marker each. */
const FORMAT_STYLES = [
  // The first four colours of the shared palette; labels take its darker shade of their series' colour.
  { format: 'gguf', ...SERIES_PALETTE[0], shape: 'circle' },
  { format: 'onnx', ...SERIES_PALETTE[1], shape: 'square' },
  { format: 'webgpu', ...SERIES_PALETTE[2], shape: 'triangle-up' },
  { format: 'simulate', ...SERIES_PALETTE[3], shape: 'diamond' },
] as const;

/** Colours for formats outside FORMAT_STYLES (the rest of the palette), taken in sorted order of their names. */
const EXTRA_COLORS = SERIES_PALETTE.slice(FORMAT_STYLES.length).map((style) => style.color);
const EXTRA_SHAPES = ['cross', 'triangle-down', 'wedge', 'triangle-left', 'triangle-right', 'arrow'] as const;

/** Plot area in SVG pixels (axes, legends and title add to it). */
const PLOT_WIDTH = 720;
const PLOT_HEIGHT = 420;

/** Most points one plot takes: a sweep grid is tens of cells; thousands would be unreadable labels. */
export const MAX_PLOT_POINTS = 500;

/** Lowest KLD drawn: a lossless cell can measure ~1e-12 from float rounding; below this it is just "0". */
const KLD_DISPLAY_MIN = 1e-10;

/** The recommendation's ring and label: a red no series uses. */
const RECOMMENDED_COLOR = '#d62728';

/** Where a label may sit around its cell, in the order vega-label tries them. */
const LABEL_ANCHORS = ['right', 'left', 'top', 'bottom', 'top-right', 'bottom-right', 'top-left', 'bottom-left'] as const;

/** Label distances from the cell's centre in pixels: past the recommendation ring (radius ~11), then twice that. */
const LABEL_NEAR = 13;
const LABEL_FAR = 30;
const LEADER_MIN_DISTANCE = 22;

const DEFAULT_TITLE = 'Quantization sweep: size vs. divergence from the baseline';

/** A point as the spec draws it: `kldPlotted` is never 0 (a log scale has no place for 0). */
interface PlottedPoint {
  readonly format: string;
  readonly type: string;
  readonly bits: number;
  readonly kld: number;
  readonly kldPlotted: number;
  readonly kldText: string;
  readonly label: string;
  readonly passed: boolean;
  readonly recommended: boolean;
}

/**
 * The Pareto-optimal points of each format: sorted by bits per weight, a point is on its format's front when
 * every smaller (or equal-size) point of that format has a larger KLD. Ties in size keep the lower KLD.
 * Returned per format in ascending bits (the order the front line is drawn in).
 */
export function paretoFront(points: readonly ParetoPoint[]): ParetoPoint[] {
  const byFormat = new Map<string, ParetoPoint[]>();
  for (const point of points) {
    const list = byFormat.get(point.format) ?? [];
    list.push(point);
    byFormat.set(point.format, list);
  }
  const front: ParetoPoint[] = [];
  for (const format of orderFormats([...byFormat.keys()])) {
    const sorted = [...(byFormat.get(format) ?? [])].sort(
      (a, b) => a.bitsPerWeight - b.bitsPerWeight || a.kldMean - b.kldMean || compareStrings(a.type, b.type),
    );
    let best = Number.POSITIVE_INFINITY;
    for (const point of sorted) {
      if (point.kldMean < best) {
        front.push(point);
        best = point.kldMean;
      }
    }
  }
  return front;
}

/** Renders the plot as a standalone SVG document (UTF-8 text, with an XML declaration). */
export async function renderParetoSvg(points: readonly ParetoPoint[], options: ParetoSvgOptions = {}): Promise<string> {
  checkPoints(points);
  const title = options.title ?? DEFAULT_TITLE;
  if (typeof title !== 'string') throw new PolyquantError(ERROR_CODES.USAGE, `plot title is ${typeof title}; expected a string`);
  return `<?xml version="1.0" encoding="UTF-8"?>\n${await renderVegaSvg(buildSpec(points, title))}\n`;
}

function checkPoints(points: readonly ParetoPoint[]): void {
  if (!Array.isArray(points) || points.length === 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'there are no cells to plot', { hint: 'run the sweep first; the plot needs at least one finished cell' });
  }
  if (points.length > MAX_PLOT_POINTS) {
    throw new PolyquantError(ERROR_CODES.LIMIT, `${points.length} cells to plot is more than the limit of ${MAX_PLOT_POINTS}`);
  }
  let recommended = 0;
  const seen = new Set<string>();
  points.forEach((point, index) => {
    const where = `cell ${index}`;
    if (typeof point?.format !== 'string' || point.format === '') throw invalid(where, 'format', point?.format, 'a non-empty string');
    if (typeof point.type !== 'string' || point.type === '') throw invalid(where, 'type', point.type, 'a non-empty string');
    const name = `${point.format}/${point.type}`;
    if (!(typeof point.bitsPerWeight === 'number' && Number.isFinite(point.bitsPerWeight) && point.bitsPerWeight > 0)) {
      throw invalid(name, 'bitsPerWeight', point.bitsPerWeight, 'a positive finite number');
    }
    if (!(typeof point.kldMean === 'number' && Number.isFinite(point.kldMean) && point.kldMean >= 0)) {
      throw invalid(name, 'kldMean', point.kldMean, 'a finite number ≥ 0');
    }
    if (typeof point.passed !== 'boolean') throw invalid(name, 'passed', point.passed, 'true or false');
    if (typeof point.recommended !== 'boolean') throw invalid(name, 'recommended', point.recommended, 'true or false');
    if (seen.has(name)) throw new PolyquantError(ERROR_CODES.USAGE, `cell ${name} is given twice`);
    seen.add(name);
    if (point.recommended) recommended++;
  });
  if (recommended > 1) throw new PolyquantError(ERROR_CODES.USAGE, `${recommended} cells are marked recommended; expected at most one`);
}

function invalid(where: string, field: string, value: unknown, expected: string): PolyquantError {
  const shown = typeof value === 'number' ? String(value) : JSON.stringify(value) ?? String(value);
  return new PolyquantError(ERROR_CODES.USAGE, `${where}: ${field} is ${shown}; expected ${expected}`);
}

/** Known formats first in table order, then any others alphabetically. */
function orderFormats(formats: readonly string[]): string[] {
  const known: string[] = FORMAT_STYLES.map((style) => style.format).filter((format) => formats.includes(format));
  const others = formats.filter((format) => !known.includes(format)).sort(compareStrings);
  return [...known, ...others];
}

function formatKld(kld: number): string {
  if (kld === 0) return '0';
  return kld.toExponential(1);
}

function buildSpec(points: readonly ParetoPoint[], title: string): Spec {
  const formats = orderFormats([...new Set(points.map((point) => point.format))]);
  const extras = formats.filter((format) => !FORMAT_STYLES.some((style) => style.format === format));
  const colors = formats.map((format) => {
    const style = FORMAT_STYLES.find((candidate) => candidate.format === format);
    return style?.color ?? EXTRA_COLORS[extras.indexOf(format) % EXTRA_COLORS.length]!;
  });
  const textColors = formats.map((format, index) => FORMAT_STYLES.find((candidate) => candidate.format === format)?.text ?? colors[index]!);
  const shapes = formats.map((format) => {
    const style = FORMAT_STYLES.find((candidate) => candidate.format === format);
    return style?.shape ?? EXTRA_SHAPES[extras.indexOf(format) % EXTRA_SHAPES.length]!;
  });

  const positive = points.map((point) => point.kldMean).filter((kld) => kld > 0);
  const smallest = positive.length > 0 ? Math.min(...positive) : 1e-6;
  // Cells of KLD 0 (or below the display floor) sit a decade under the smallest measured KLD, on a dashed
  // line labelled "KLD 0", so they stay visible and do not pretend to a measured value.
  const hasZero = points.some((point) => point.kldMean < KLD_DISPLAY_MIN);
  const zeroLine = Math.max(KLD_DISPLAY_MIN, Number(`1e${Math.floor(Math.log10(Math.max(smallest, KLD_DISPLAY_MIN))) - 1}`));
  const largest = Math.max(smallest, ...positive);

  const plotted: PlottedPoint[] = [...points]
    .sort((a, b) => formats.indexOf(a.format) - formats.indexOf(b.format) || a.bitsPerWeight - b.bitsPerWeight || compareStrings(a.type, b.type))
    .map((point) => {
      const isZero = point.kldMean < KLD_DISPLAY_MIN;
      return {
        format: point.format,
        type: point.type,
        bits: point.bitsPerWeight,
        kld: point.kldMean,
        kldPlotted: isZero ? zeroLine : point.kldMean,
        kldText: formatKld(point.kldMean),
        label: `${point.type}${isZero ? ` (KLD ${formatKld(point.kldMean)})` : ''}${point.recommended ? ' · recommended' : ''}`,
        passed: point.passed,
        recommended: point.recommended,
      };
    });
  const front = paretoFront(points).map((point) => plotted.find((candidate) => candidate.format === point.format && candidate.type === point.type)!);

  const bits = points.map((point) => point.bitsPerWeight);
  const bitsMin = Math.min(...bits);
  const bitsMax = Math.max(...bits);
  const bitsMargin = Math.max((bitsMax - bitsMin) * 0.06, 0.5);
  const yMin = (hasZero ? zeroLine : smallest) / 2.5;
  const yMax = largest * 2.5;

  // One tick and grid line per decade: a log axis' default minor lines (2…9 × 10^k) crowd a 9-decade range.
  const decades = decadeTicks(yMin, yMax);

  const statusLabels = ['passes every threshold', 'fails a threshold', 'recommended', 'Pareto front'] as const;

  return {
    $schema: 'https://vega.github.io/schema/vega/v6.json',
    width: PLOT_WIDTH,
    height: PLOT_HEIGHT,
    padding: 12,
    autosize: { type: 'pad' },
    background: '#ffffff',
    title: {
      text: title,
      subtitle: hasZero
        ? `one series per format · hollow: failed a threshold · lines: Pareto fronts · KLD 0 drawn at ${formatKld(zeroLine)}`
        : 'one series per format · hollow: failed a threshold · lines: Pareto fronts',
      ...TITLE_STYLE,
    },
    data: [
      { name: 'points', values: plotted },
      { name: 'front', values: front },
      { name: 'recommended', source: 'points', transform: [{ type: 'filter', expr: 'datum.recommended' }] },
      { name: 'zero', values: hasZero ? [{ kld: zeroLine }] : [] },
    ],
    scales: [
      {
        name: 'x',
        type: 'linear',
        domain: [Math.max(0, bitsMin - bitsMargin), bitsMax + bitsMargin],
        range: 'width',
        nice: true,
        zero: false,
      },
      { name: 'y', type: 'log', domain: [yMin, yMax], range: 'height', nice: true },
      { name: 'color', type: 'ordinal', domain: formats, range: colors },
      { name: 'shape', type: 'ordinal', domain: formats, range: shapes },
      { name: 'textColor', type: 'ordinal', domain: formats, range: textColors },
      { name: 'statusShape', type: 'ordinal', domain: [...statusLabels], range: ['circle', 'circle', 'circle', 'stroke'] },
      { name: 'statusFill', type: 'ordinal', domain: [...statusLabels], range: ['#666666', '#ffffff', 'transparent', 'transparent'] },
      { name: 'statusStroke', type: 'ordinal', domain: [...statusLabels], range: ['#666666', '#666666', RECOMMENDED_COLOR, '#666666'] },
      { name: 'statusSize', type: 'ordinal', domain: [...statusLabels], range: [90, 90, 260, 200] },
    ],
    axes: [
      {
        orient: 'bottom',
        scale: 'x',
        title: 'bits per weight',
        grid: true,
        gridColor: GRID_COLOR,
        tickCount: 10,
        ...AXIS_TEXT_STYLE,
      },
      {
        orient: 'left',
        scale: 'y',
        title: 'mean KLD to the baseline (nats, log scale)',
        grid: true,
        gridColor: GRID_COLOR,
        format: '.0e',
        values: decades,
        ...AXIS_TEXT_STYLE,
      },
    ],
    legends: [
      {
        title: 'format',
        fill: 'color',
        shape: 'shape',
        orient: 'right',
        symbolSize: 110,
        symbolStrokeWidth: 0,
        labelLimit: 0,
        ...LEGEND_TEXT_STYLE,
      },
      {
        title: 'cell',
        shape: 'statusShape',
        fill: 'statusFill',
        stroke: 'statusStroke',
        size: 'statusSize',
        orient: 'right',
        symbolStrokeWidth: 2,
        labelLimit: 0,
        ...LEGEND_TEXT_STYLE,
      },
    ],
    marks: [
      {
        type: 'rule',
        from: { data: 'zero' },
        encode: {
          enter: {
            x: { value: 0 },
            x2: { signal: 'width' },
            y: { scale: 'y', field: 'kld' },
            stroke: { value: '#999999' },
            strokeDash: { value: [4, 4] },
            strokeWidth: { value: 1 },
          },
        },
      },
      {
        type: 'text',
        from: { data: 'zero' },
        encode: {
          enter: {
            x: { signal: 'width', offset: -4 },
            y: { scale: 'y', field: 'kld', offset: -4 },
            text: { value: 'KLD 0' },
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
        from: { facet: { name: 'frontOfFormat', data: 'front', groupby: 'format' } },
        marks: [
          {
            type: 'line',
            from: { data: 'frontOfFormat' },
            encode: {
              enter: {
                x: { scale: 'x', field: 'bits' },
                y: { scale: 'y', field: 'kldPlotted' },
                stroke: { scale: 'color', field: 'format' },
                strokeWidth: { value: 1.75 },
                strokeOpacity: { value: 0.7 },
              },
            },
          },
        ],
      },
      {
        type: 'symbol',
        name: 'ring',
        from: { data: 'recommended' },
        zindex: 1,
        encode: {
          enter: {
            x: { scale: 'x', field: 'bits' },
            y: { scale: 'y', field: 'kldPlotted' },
            shape: { value: 'circle' },
            size: { value: 400 },
            fill: { value: 'transparent' },
            stroke: { value: RECOMMENDED_COLOR },
            strokeWidth: { value: 2.5 },
          },
        },
      },
      {
        type: 'symbol',
        name: 'cells',
        from: { data: 'points' },
        zindex: 1,
        encode: {
          enter: {
            x: { scale: 'x', field: 'bits' },
            y: { scale: 'y', field: 'kldPlotted' },
            shape: { scale: 'shape', field: 'format' },
            size: { value: 110 },
            fill: [{ test: 'datum.passed', scale: 'color', field: 'format' }, { value: '#ffffff' }],
            stroke: { scale: 'color', field: 'format' },
            strokeWidth: { value: 2 },
            tooltip: { signal: "datum.format + ' ' + datum.type + ': ' + format(datum.bits, '.2f') + ' bpw, KLD ' + datum.kldText" },
          },
        },
      },
      {
        type: 'text',
        name: 'labels',
        from: { data: 'points' },
        zindex: 2,
        encode: {
          enter: {
            x: { scale: 'x', field: 'bits' },
            y: { scale: 'y', field: 'kldPlotted' },
            text: { field: 'label' },
            fill: [{ test: 'datum.recommended', value: RECOMMENDED_COLOR }, { scale: 'textColor', field: 'format' }],
            fontWeight: [{ test: 'datum.recommended', value: 'bold' }, { value: 'normal' }],
            font: { value: FONT_FAMILIES },
            fontSize: { value: 11 },
          },
        },
        // vega-label places each label at the first of these positions that overlaps no other label and no
        // cell (it cannot avoid the lines: that needs a canvas, which Node lacks). Near positions first, then
        // the same ring twice as far out, where the leader lines below say which cell a label belongs to.
        transform: [
          {
            type: 'label',
            size: [{ signal: 'width' }, { signal: 'height' }],
            anchor: [...LABEL_ANCHORS, ...LABEL_ANCHORS],
            offset: [...LABEL_ANCHORS.map(() => LABEL_NEAR), ...LABEL_ANCHORS.map(() => LABEL_FAR)],
            padding: 40,
          },
        ],
      },
      {
        // Leader lines from each cell to its label, drawn under the cells (zindex) so a label placed next
        // to its cell shows none.
        type: 'rule',
        from: { data: 'labels' },
        zindex: 0,
        encode: {
          update: {
            x: { signal: "scale('x', datum.datum.bits)" },
            y: { signal: "scale('y', datum.datum.kldPlotted)" },
            x2: { field: 'x' },
            y2: { field: 'y' },
            stroke: { value: '#999999' },
            strokeWidth: { value: 0.75 },
            // Only for labels at the far ring: a near label is plainly its cell's.
            strokeOpacity: {
              signal: `hypot(datum.x - scale('x', datum.datum.bits), datum.y - scale('y', datum.datum.kldPlotted)) > ${LEADER_MIN_DISTANCE} ? 1 : 0`,
            },
          },
        },
      },
    ],
  } as Spec;
}
