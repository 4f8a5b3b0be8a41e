/**
 * The sweep's Pareto plot (src/sweep/plot.ts): a realistic grid of GGUF, ONNX and WebGPU cells rendered to
 * SVG, parsed back as strict XML (@xmldom/xmldom, an independent parser), rasterised to PNG and decoded with
 * pngjs to check that something readable was drawn: the size asked for, the series colours, text ink, and a
 * sane share of non-white pixels. The example is saved to bench/out/pareto-example.png (gitignored; no SVG
 * there, which the linter would read as HTML); docs/sweep-pareto.png in the README is a copy of it.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Document, DOMParser, type Element, onWarningStopParsing } from '@xmldom/xmldom';
import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../src/errors.js';
import { type ParetoPoint, paretoFront, renderParetoSvg, svgToPng } from '../src/sweep/plot.js';
import { expectPolyquantError } from './helpers/errors.js';
import { REPO_ROOT } from './helpers/shared.js';

/** A quick sweep of polyglot-ko-tiny as it could come out: one lossless cell, one failed, one recommended. */
const SWEEP: readonly ParetoPoint[] = [
  { format: 'gguf', type: 'f16', bitsPerWeight: 16, kldMean: 0, passed: true, recommended: false },
  { format: 'gguf', type: 'q8_0', bitsPerWeight: 8.5, kldMean: 2.1e-5, passed: true, recommended: false },
  { format: 'gguf', type: 'q4_k_m', bitsPerWeight: 4.89, kldMean: 1.4e-3, passed: true, recommended: true },
  { format: 'gguf', type: 'q4_0', bitsPerWeight: 4.5, kldMean: 4.2e-3, passed: true, recommended: false },
  { format: 'onnx', type: 'fp16', bitsPerWeight: 16, kldMean: 3e-8, passed: true, recommended: false },
  { format: 'onnx', type: 'q8', bitsPerWeight: 8.25, kldMean: 2.0e-5, passed: true, recommended: false },
  { format: 'onnx', type: 'q4', bitsPerWeight: 4.6, kldMean: 3.1e-3, passed: true, recommended: false },
  { format: 'onnx', type: 'q4f16', bitsPerWeight: 4.55, kldMean: 3.3e-3, passed: false, recommended: false },
  { format: 'webgpu', type: 'q4f16_1', bitsPerWeight: 4.5, kldMean: 3.9e-3, passed: true, recommended: false },
  { format: 'webgpu', type: 'q8f16_pq', bitsPerWeight: 8.5, kldMean: 2.6e-5, passed: true, recommended: false },
  { format: 'simulate', type: 'q3_k_m', bitsPerWeight: 3.9, kldMean: 2.4e-2, passed: false, recommended: false },
];

/** The fill of each series (FORMAT_STYLES in plot.ts): a filled marker's inside is exactly this colour. */
const SERIES_COLORS = { gguf: '#4c78a8', onnx: '#f58518', webgpu: '#54a24b', simulate: '#b279a2' } as const;

function parseSvg(svg: string): Document {
  // onWarningStopParsing: any well-formedness problem, however small, throws instead of being repaired.
  return new DOMParser({ onError: onWarningStopParsing }).parseFromString(svg, 'image/svg+xml');
}

/** Every <text> element's content that is drawn (not hidden by a zero opacity, as unplaced labels are). */
function visibleTexts(document: Document): string[] {
  const texts: string[] = [];
  const elements = document.getElementsByTagName('text');
  for (let index = 0; index < elements.length; index++) {
    const element = elements.item(index) as Element;
    if (element.getAttribute('opacity') === '0' || element.getAttribute('fill-opacity') === '0') continue;
    texts.push(element.textContent ?? '');
  }
  return texts;
}

interface PixelCensus {
  readonly width: number;
  readonly height: number;
  readonly nonWhiteFraction: number;
  readonly distinctColors: number;
  /** Pixels that are near black: only text is drawn in black (axes and grid are grey). */
  readonly darkPixels: number;
  readonly countOf: (hex: string) => number;
}

function census(pngBytes: Uint8Array): PixelCensus {
  const png = PNG.sync.read(Buffer.from(pngBytes));
  const counts = new Map<number, number>();
  let nonWhite = 0;
  let dark = 0;
  for (let offset = 0; offset < png.data.length; offset += 4) {
    const red = png.data[offset]!;
    const green = png.data[offset + 1]!;
    const blue = png.data[offset + 2]!;
    const key = (red << 16) | (green << 8) | blue;
    counts.set(key, (counts.get(key) ?? 0) + 1);
    if (key !== 0xffffff) nonWhite++;
    if (red < 64 && green < 64 && blue < 64) dark++;
  }
  return {
    width: png.width,
    height: png.height,
    nonWhiteFraction: nonWhite / (png.width * png.height),
    distinctColors: counts.size,
    darkPixels: dark,
    countOf: (hex) => counts.get(Number.parseInt(hex.slice(1), 16)) ?? 0,
  };
}

describe('renderParetoSvg', () => {
  it('draws a well-formed SVG with every cell labelled, both legends, the axis titles and the title', async () => {
    const svg = await renderParetoSvg(SWEEP, { title: 'polyglot-ko-tiny: quick sweep' });
    const document = parseSvg(svg);
    expect(document.documentElement?.tagName).toBe('svg');
    expect(document.documentElement?.getAttribute('xmlns')).toBe('http://www.w3.org/2000/svg');
    const texts = visibleTexts(document);
    for (const point of SWEEP) {
      expect(
        texts.some((text) => text === point.type || text.startsWith(`${point.type} `)),
        `label of ${point.format}/${point.type}`,
      ).toBe(true);
    }
    expect(texts).toContain('q4_k_m · recommended');
    expect(texts).toContain('f16 (KLD 0)');
    expect(texts).toContain('KLD 0');
    for (const legendText of ['format', 'gguf', 'onnx', 'webgpu', 'simulate', 'cell', 'passes every threshold', 'fails a threshold', 'recommended', 'Pareto front']) {
      expect(texts, legendText).toContain(legendText);
    }
    expect(texts).toContain('bits per weight');
    expect(texts).toContain('mean KLD to the baseline (nats, log scale)');
    expect(texts).toContain('polyglot-ko-tiny: quick sweep');
    // Decade ticks only, down to the line that cells of KLD 0 are drawn on.
    expect(texts).toEqual(expect.arrayContaining(['1e-1', '1e-5', '1e-9']));
  });

  it('gives the same bytes for the same cells, in any order', async () => {
    const first = await renderParetoSvg(SWEEP);
    const second = await renderParetoSvg([...SWEEP].reverse());
    expect(second).toBe(first);
    expect(await svgToPng(second, { width: 800 })).toEqual(await svgToPng(first, { width: 800 }));
  });

  it('draws a single cell, and a grid where every KLD is 0', async () => {
    const single = await renderParetoSvg([{ format: 'gguf', type: 'q8_0', bitsPerWeight: 8.5, kldMean: 2e-5, passed: false, recommended: false }]);
    expect(visibleTexts(parseSvg(single))).toContain('q8_0');
    const lossless = await renderParetoSvg([
      { format: 'gguf', type: 'f16', bitsPerWeight: 16, kldMean: 0, passed: true, recommended: true },
      { format: 'onnx', type: 'fp32', bitsPerWeight: 32, kldMean: 0, passed: true, recommended: false },
    ]);
    const texts = visibleTexts(parseSvg(lossless));
    expect(texts).toContain('f16 (KLD 0) · recommended');
    expect(texts).toContain('fp32 (KLD 0)');
    expect(census(await svgToPng(lossless, { width: 600 })).darkPixels).toBeGreaterThan(500);
  });

  it('escapes markup in the title, format and type names', async () => {
    const svg = await renderParetoSvg([{ format: 'gg<uf&', type: `q4 <"&'>`, bitsPerWeight: 4, kldMean: 1e-3, passed: true, recommended: true }], {
      title: 'a < b & "c"',
    });
    const texts = visibleTexts(parseSvg(svg));
    expect(texts).toEqual(expect.arrayContaining(['gg<uf&', 'a < b & "c"', `q4 <"&'> · recommended`]));
  });

  it('rejects an empty grid and cells with impossible values with usage errors', async () => {
    const cell: ParetoPoint = { format: 'gguf', type: 'q4_0', bitsPerWeight: 4.5, kldMean: 1e-3, passed: true, recommended: false };
    await expectPolyquantError(renderParetoSvg([]), ERROR_CODES.USAGE, 'no cells to plot');
    await expectPolyquantError(renderParetoSvg([{ ...cell, bitsPerWeight: Number.NaN }]), ERROR_CODES.USAGE, 'gguf/q4_0', 'bitsPerWeight is NaN');
    await expectPolyquantError(renderParetoSvg([{ ...cell, bitsPerWeight: 0 }]), ERROR_CODES.USAGE, 'bitsPerWeight is 0');
    await expectPolyquantError(renderParetoSvg([{ ...cell, kldMean: -1e-9 }]), ERROR_CODES.USAGE, 'kldMean is -1e-9');
    await expectPolyquantError(renderParetoSvg([{ ...cell, kldMean: Number.POSITIVE_INFINITY }]), ERROR_CODES.USAGE, 'kldMean is Infinity');
    await expectPolyquantError(renderParetoSvg([{ ...cell, format: '' }]), ERROR_CODES.USAGE, 'cell 0', 'format');
    await expectPolyquantError(renderParetoSvg([cell, { ...cell }]), ERROR_CODES.USAGE, 'gguf/q4_0 is given twice');
    await expectPolyquantError(
      renderParetoSvg([
        { ...cell, recommended: true },
        { ...cell, type: 'q8_0', recommended: true },
      ]),
      ERROR_CODES.USAGE,
      '2 cells are marked recommended',
    );
    const tooMany = Array.from({ length: 501 }, (_, index) => ({ ...cell, type: `t${index}` }));
    await expectPolyquantError(renderParetoSvg(tooMany), ERROR_CODES.LIMIT, '501 cells');
  });
});

describe('paretoFront', () => {
  it('keeps, per format, each cell that no smaller cell of its format beats on KLD', () => {
    const front = paretoFront(SWEEP).map((point) => `${point.format}/${point.type}`);
    expect(front).toEqual([
      'gguf/q4_0',
      'gguf/q4_k_m',
      'gguf/q8_0',
      'gguf/f16',
      'onnx/q4f16',
      'onnx/q4',
      'onnx/q8',
      'onnx/fp16',
      'webgpu/q4f16_1',
      'webgpu/q8f16_pq',
      'simulate/q3_k_m',
    ]);
    const dominated: ParetoPoint[] = [
      { format: 'gguf', type: 'q5_0', bitsPerWeight: 5.5, kldMean: 2e-3, passed: true, recommended: false },
      { format: 'gguf', type: 'q4_k_m', bitsPerWeight: 4.89, kldMean: 1.4e-3, passed: true, recommended: false },
      { format: 'gguf', type: 'q4_k_s', bitsPerWeight: 4.89, kldMean: 1.9e-3, passed: true, recommended: false },
    ];
    expect(paretoFront(dominated).map((point) => point.type)).toEqual(['q4_k_m']);
  });
});

describe('svgToPng', () => {
  it('rasterises the plot at the width asked for, with the series colours and legible text', async () => {
    const svg = await renderParetoSvg(SWEEP);
    const png = await svgToPng(svg, { width: 1600 });
    const out = join(REPO_ROOT, 'bench', 'out');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'pareto-example.png'), await svgToPng(svg));

    const pixels = census(png);
    expect(pixels.width).toBe(1600);
    const svgWidth = Number(/<svg[^>]* width="(\d+)"/.exec(svg)?.[1]);
    const svgHeight = Number(/<svg[^>]* height="(\d+)"/.exec(svg)?.[1]);
    expect(pixels.height).toBe(Math.round((1600 * svgHeight) / svgWidth));
    // White background with a chart on it: neither blank nor flooded.
    expect(pixels.nonWhiteFraction).toBeGreaterThan(0.03);
    expect(pixels.nonWhiteFraction).toBeLessThan(0.35);
    expect(pixels.distinctColors).toBeGreaterThan(100);
    for (const [format, color] of Object.entries(SERIES_COLORS)) {
      expect(pixels.countOf(color), `${format} ${color}`).toBeGreaterThan(50);
    }
    // Recommendation ring.
    expect(pixels.countOf('#d62728')).toBeGreaterThan(50);
    // Text: without a font resvg would draw none, and no black pixel would be left.
    expect(pixels.darkPixels).toBeGreaterThan(5000);
  });

  it('rejects a bad width and an SVG that does not parse', async () => {
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>';
    await expectPolyquantError(svgToPng(svg, { width: 0 }), ERROR_CODES.USAGE, 'PNG width is 0');
    await expectPolyquantError(svgToPng(svg, { width: 100.5 }), ERROR_CODES.USAGE, 'PNG width is 100.5');
    await expectPolyquantError(svgToPng(svg, { width: 100_000 }), ERROR_CODES.USAGE, 'PNG width is 100000');
    await expectPolyquantError(svgToPng(''), ERROR_CODES.USAGE, 'empty');
    await expectPolyquantError(svgToPng('<svg><g></svg>'), ERROR_CODES.MALFORMED, 'SVG could not be parsed');
  });
});
