/**
 * The sweep's Pareto plot: bits per weight (x, linear) against mean KLD to the baseline (y, log), one
 * series per format, each cell labelled with its type, the Pareto front of each format drawn as a line,
 * cells that failed a threshold hollow and the recommendation ringed.
 *
 * Rendering is Vega's (a declarative spec, rendered to an SVG string by `View.toSVG()` with no DOM or
 * canvas: vega-scenegraph's SVGStringRenderer), rasterised to PNG by resvg (@resvg/resvg-js, a prebuilt
 * binary per platform). The SVG is a pure function of the points: Vega's scenegraph depends on the spec and
 * data alone (its one global state, the clip/gradient id counters, is reset before each render), and the
 * points are sorted before they reach it. The PNG is a function of the SVG and the fonts installed.
 *
 * Text: in Node Vega measures text by estimate (0.8 em a character, vega-scenegraph `estimateWidth`)
 * because there is no canvas, so layouts leave a little more room than the glyphs need. resvg draws text
 * only with fonts it can find: it loads the system fonts and asks for the FONT_FAMILIES stack below
 * (DejaVu Sans is in Debian's base image through fonts-dejavu-core; Liberation Sans, Arial and Helvetica
 * cover other systems). A machine with none of them gets any other installed font (resvg's fallback);
 * a machine with no font at all gets a PolyquantError rather than a PNG without a word on it.
 */

import { type RenderedImage, Resvg, renderAsync } from '@resvg/resvg-js';
import { parse, resetSVGDefIds, type Spec, View } from 'vega';
import { ERROR_CODES, PolyquantError } from '../errors.js';

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

export interface PngOptions {
  /** Width of the PNG in pixels; the height follows the SVG's aspect ratio. */
  readonly width?: number;
}

/** The formats the sweep knows, in the order their series are drawn and listed, with a colour and marker each. */
const FORMAT_STYLES = [
  // Colours from Vega's tableau10 scheme: distinct for the common colour-vision deficiencies at this count.
  // Labels take a darker shade of their series' colour: readable on white, and they still say which series a
  // label belongs to where cells crowd.
  { format: 'gguf', color: '#4c78a8', text: '#2f5580', shape: 'circle' },
  { format: 'onnx', color: '#f58518', text: '#b35a00', shape: 'square' },
  { format: 'webgpu', color: '#54a24b', text: '#35702e', shape: 'triangle-up' },
  { format: 'simulate', color: '#b279a2', text: '#80507a', shape: 'diamond' },
] as const;

/** Styles for formats outside FORMAT_STYLES, taken in sorted order of their names. */
const EXTRA_COLORS = ['#e45756', '#72b7b2', '#eeca3b', '#9d755d', '#ff9da6', '#bab0ac'] as const;
const EXTRA_SHAPES = ['cross', 'triangle-down', 'wedge', 'triangle-left', 'triangle-right', 'arrow'] as const;

/** Fonts asked for, in order (see the module comment). Vega writes the stack into every text element. */
const FONT_FAMILIES = 'DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif';

/**
 * resvg's font set: the system's fonts. The generic families are left at resvg's defaults: the SVG names
 * FONT_FAMILIES first, and a family no font has falls back to one that has the glyphs.
 */
const RESVG_FONTS = { loadSystemFonts: true } as const;

/** Plot area in SVG pixels (axes, legends and title add to it). */
const PLOT_WIDTH = 720;
const PLOT_HEIGHT = 420;

/** Most points one plot takes: a sweep grid is tens of cells; thousands would be unreadable labels. */
export const MAX_PLOT_POINTS = 500;

/** Default PNG width: about twice the SVG's, sharp on a high-density screen and in a README. */
const DEFAULT_PNG_WIDTH = 2000;
/** Largest PNG width accepted: 8k pixels is past any screen, and keeps the pixel buffer under ~200 MB. */
const MAX_PNG_WIDTH = 8192;

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
  const view = new View(parse(buildSpec(points, title)), { renderer: 'none' });
  try {
    // The SVG renderer numbers clip paths and gradients from module-level counters: reset them so the same
    // points give the same bytes however many plots this process has drawn.
    resetSVGDefIds();
    const svg = await view.toSVG();
    return `<?xml version="1.0" encoding="UTF-8"?>\n${svg}\n`;
  } finally {
    view.finalize();
  }
}

/** Rasterises an SVG (from renderParetoSvg, or any other) to PNG bytes with resvg. */
export async function svgToPng(svg: string, options: PngOptions = {}): Promise<Uint8Array> {
  const width = options.width ?? DEFAULT_PNG_WIDTH;
  if (!Number.isSafeInteger(width) || width < 16 || width > MAX_PNG_WIDTH) {
    throw new PolyquantError(ERROR_CODES.USAGE, `PNG width is ${width}; expected an integer from 16 to ${MAX_PNG_WIDTH} pixels`);
  }
  if (typeof svg !== 'string' || svg.length === 0) throw new PolyquantError(ERROR_CODES.USAGE, 'the SVG to rasterise is empty');
  if (svg.includes('<text') && !hasUsableFont()) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'no font was found to draw the plot text with', {
      hint: 'install a TrueType font, e.g. the fonts-dejavu-core package on Debian',
    });
  }
  let image: RenderedImage;
  try {
    // renderAsync parses and draws on a libuv worker thread: a 2000-pixel plot takes ~100 ms.
    image = await renderAsync(svg, {
      fitTo: { mode: 'width', value: width },
      font: RESVG_FONTS,
      background: '#ffffff',
      logLevel: 'off',
    });
  } catch (error) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, `the SVG could not be parsed: ${error instanceof Error ? error.message : String(error)}`, {
      cause: error,
    });
  }
  return image.asPng();
}

let fontFound: boolean | undefined;

/** Whether resvg finds any font on this machine: draws one letter and looks for ink. Cached per process. */
function hasUsableFont(): boolean {
  if (fontFound === undefined) {
    const probe = new Resvg(
      `<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><text x="4" y="32" font-size="32" font-family="${FONT_FAMILIES}">H</text></svg>`,
      { font: RESVG_FONTS, logLevel: 'off' },
    );
    const pixels = probe.render().pixels;
    // RGBA without a background: any non-zero alpha is ink.
    fontFound = false;
    for (let index = 3; index < pixels.length && !fontFound; index += 4) fontFound = pixels[index] !== 0;
  }
  return fontFound;
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

/** Locale-independent string order (localeCompare would make the output depend on the machine's ICU). */
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
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
  const decades: number[] = [];
  for (let exponent = Math.floor(Math.log10(yMin)); exponent <= Math.ceil(Math.log10(yMax)); exponent++) decades.push(Number(`1e${exponent}`));

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
      anchor: 'start',
      font: FONT_FAMILIES,
      fontSize: 17,
      subtitleFont: FONT_FAMILIES,
      subtitleFontSize: 12,
      subtitleColor: '#555555',
      offset: 12,
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
        gridColor: '#e6e6e6',
        tickCount: 10,
        labelFont: FONT_FAMILIES,
        titleFont: FONT_FAMILIES,
        labelFontSize: 12,
        titleFontSize: 13,
      },
      {
        orient: 'left',
        scale: 'y',
        title: 'mean KLD to the baseline (nats, log scale)',
        grid: true,
        gridColor: '#e6e6e6',
        format: '.0e',
        values: decades,
        labelFont: FONT_FAMILIES,
        titleFont: FONT_FAMILIES,
        labelFontSize: 12,
        titleFontSize: 13,
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
        titleFont: FONT_FAMILIES,
        labelFont: FONT_FAMILIES,
        titleFontSize: 12,
        labelFontSize: 12,
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
        titleFont: FONT_FAMILIES,
        labelFont: FONT_FAMILIES,
        titleFontSize: 12,
        labelFontSize: 12,
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
