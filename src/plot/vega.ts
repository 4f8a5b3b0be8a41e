/**
 * The project's one plotting layer: Vega specs rendered to SVG strings with no DOM or canvas, the house
 * style every chart shares (fonts, colours, axis and title text), and rasterisation to PNG. Used by the
 * sweep's Pareto plot (sweep/plot.ts), the `verify --html` page (verify/html.ts) and the
 * `convert --dry-run --error --html` page (cli/convert-html.ts).
 *
 * Rendering is Vega's (a declarative spec, rendered to an SVG string by `View.toSVG()`: vega-scenegraph's
 * SVGStringRenderer), so an SVG is a pure function of its spec and data: Vega's one global state, the
 * clip/gradient id counters, is reset before each render. Several charts inlined in one HTML page share
 * one id space: `idPrefix` renames a chart's ids so that they cannot collide.
 *
 * Text: in Node Vega measures text by estimate (0.8 em a character, vega-scenegraph `estimateWidth`)
 * because there is no canvas, so layouts leave a little more room than the glyphs need. resvg draws text
 * only with fonts it can find: it loads the system fonts and asks for the FONT_FAMILIES stack below
 * (DejaVu Sans is in Debian's base image through fonts-dejavu-core; Liberation Sans, Arial and Helvetica
 * cover other systems). A machine with none of them gets any other installed font (resvg's fallback);
 * a machine with no font at all gets a PolyquantError rather than a PNG without a word on it. A browser
 * showing an inlined SVG resolves the same stack itself.
 */

import { type RenderedImage, Resvg, renderAsync } from '@resvg/resvg-js';
import { parse, resetSVGDefIds, type Spec, View } from 'vega';
import { ERROR_CODES, PolyquantError } from '../errors.js';

/** Fonts asked for, in order (see the module comment). Vega writes the stack into every text element. */
export const FONT_FAMILIES = 'DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif';

/**
 * Series colours, in the order series take them: Vega's tableau10 scheme, distinct for the common
 * colour-vision deficiencies at this count. `text` is a darker shade of the same hue for labels, readable
 * on white while still saying which series a label belongs to.
 */
export const SERIES_PALETTE = [
  { color: '#4c78a8', text: '#2f5580' },
  { color: '#f58518', text: '#b35a00' },
  { color: '#54a24b', text: '#35702e' },
  { color: '#b279a2', text: '#80507a' },
  { color: '#e45756', text: '#a8302f' },
  { color: '#72b7b2', text: '#3f7f7a' },
  { color: '#eeca3b', text: '#8a7000' },
  { color: '#9d755d', text: '#6b4a37' },
  { color: '#ff9da6', text: '#b3545e' },
  { color: '#bab0ac', text: '#6e6561' },
] as const;

/** Grid lines, secondary text and reference rules. */
export const GRID_COLOR = '#e6e6e6';
export const MUTED_TEXT_COLOR = '#555555';
export const RULE_COLOR = '#999999';

/** Title and subtitle text of every chart (Vega `title` properties). */
export const TITLE_STYLE = {
  anchor: 'start',
  font: FONT_FAMILIES,
  fontSize: 17,
  subtitleFont: FONT_FAMILIES,
  subtitleFontSize: 12,
  subtitleColor: MUTED_TEXT_COLOR,
  offset: 12,
} as const;

/** Axis label and title text of every chart (Vega `axes` properties). */
export const AXIS_TEXT_STYLE = { labelFont: FONT_FAMILIES, titleFont: FONT_FAMILIES, labelFontSize: 12, titleFontSize: 13 } as const;

/** Legend label and title text of every chart (Vega `legends` properties). */
export const LEGEND_TEXT_STYLE = { titleFont: FONT_FAMILIES, labelFont: FONT_FAMILIES, titleFontSize: 12, labelFontSize: 12 } as const;

export interface VegaSvgOptions {
  /**
   * Prefix for the ids Vega defines (clip paths, gradients) and their references, for an SVG inlined in a
   * page beside others: letters, digits, `-` and `_`, starting with a letter.
   */
  readonly idPrefix?: string;
}

export interface PngOptions {
  /** Width of the PNG in pixels; the height follows the SVG's aspect ratio. */
  readonly width?: number;
}

/**
 * resvg's font set: the system's fonts. The generic families are left at resvg's defaults: the SVG names
 * FONT_FAMILIES first, and a family no font has falls back to one that has the glyphs.
 */
const RESVG_FONTS = { loadSystemFonts: true } as const;

/** Default PNG width: about twice a chart's SVG width, sharp on a high-density screen and in a README. */
const DEFAULT_PNG_WIDTH = 2000;
/** Largest PNG width accepted: 8k pixels is past any screen, and keeps the pixel buffer under ~200 MB. */
const MAX_PNG_WIDTH = 8192;

const ID_PREFIX_PATTERN = /^[A-Za-z][A-Za-z0-9_-]*$/;

/**
 * Renders a Vega spec to an SVG element (`<svg …>…</svg>`, no XML declaration). Same spec and data, same
 * bytes: the id counters are reset first, and the render runs with no renderer attached to a DOM.
 */
export async function renderVegaSvg(spec: Spec, options: VegaSvgOptions = {}): Promise<string> {
  if (options.idPrefix !== undefined && !ID_PREFIX_PATTERN.test(options.idPrefix)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `SVG id prefix ${JSON.stringify(options.idPrefix)} is not a plain name`, {
      hint: 'use letters, digits, - and _, starting with a letter',
    });
  }
  const view = new View(parse(spec), { renderer: 'none' });
  let svg: string;
  try {
    // The SVG renderer numbers clip paths and gradients from module-level counters: reset them so the same
    // spec gives the same bytes however many charts this process has drawn.
    resetSVGDefIds();
    svg = await view.toSVG();
  } finally {
    view.finalize();
  }
  return options.idPrefix === undefined ? svg : prefixSvgIds(svg, options.idPrefix);
}

/**
 * Renames every `id="X"` of a Vega SVG to `id="PREFIX-X"`, and its references (`url(#X)`, `href="#X"`) to
 * match. Vega's SVG has ids only on the definitions it writes (clip paths, gradients), and its text content
 * is escaped, so attribute syntax found here is markup, never a chart's words.
 */
function prefixSvgIds(svg: string, prefix: string): string {
  return svg
    .replace(/ id="([^"]+)"/g, (_match, id: string) => ` id="${prefix}-${id}"`)
    .replace(/url\(#([^)]+)\)/g, (_match, id: string) => `url(#${prefix}-${id})`)
    .replace(/href="#([^"]+)"/g, (_match, id: string) => `href="#${prefix}-${id}"`);
}

/** Rasterises an SVG (from renderVegaSvg, or any other) to PNG bytes with resvg. */
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

/** Locale-independent string order (localeCompare would make the output depend on the machine's ICU). */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Powers of ten from below `low` to above `high`: one tick and grid line per decade, since a log axis'
 * default minor lines (2…9 × 10^k) crowd a range of many decades.
 */
export function decadeTicks(low: number, high: number): number[] {
  const decades: number[] = [];
  for (let exponent = Math.floor(Math.log10(low)); exponent <= Math.ceil(Math.log10(high)); exponent++) decades.push(Number(`1e${exponent}`));
  return decades;
}
