/**
 * The shared plotting layer (src/plot/vega.ts) and page scaffolding (src/plot/page.ts) that the sweep's
 * Pareto plot, the verify page and the convert page are built on: id prefixes that keep several Vega
 * charts apart in one page, escaping, and the page's no-network policy.
 */
import { describe, expect, it } from 'vitest';
import type { Spec } from 'vega';
import { ERROR_CODES } from '../src/errors.js';
import { chartFigure, escapeHtml, htmlPage, htmlTable } from '../src/plot/page.js';
import { renderVegaSvg } from '../src/plot/vega.js';
import { expectPolyquantError } from './helpers/errors.js';

/** A group mark with clip: true makes Vega define a clip path, the one kind of id its SVG carries. */
const CLIPPED: Spec = {
  width: 100,
  height: 60,
  data: [{ name: 'points', values: [{ x: 1, y: 2 }, { x: 3, y: 1 }] }],
  scales: [
    { name: 'x', type: 'linear', domain: [0, 4], range: 'width' },
    { name: 'y', type: 'linear', domain: [0, 3], range: 'height' },
  ],
  marks: [
    {
      type: 'group',
      clip: true,
      encode: { enter: { width: { signal: 'width' }, height: { signal: 'height' } } },
      marks: [{ type: 'symbol', from: { data: 'points' }, encode: { enter: { x: { scale: 'x', field: 'x' }, y: { scale: 'y', field: 'y' } } } }],
    },
  ],
};

describe('renderVegaSvg', () => {
  it('renders the same bytes twice, and renames every id and reference under a prefix', async () => {
    const plain = await renderVegaSvg(CLIPPED);
    expect(await renderVegaSvg(CLIPPED)).toBe(plain);
    expect(plain).toMatch(/<clipPath id="clip1">/);
    expect(plain).toContain('clip-path="url(#clip1)"');
    const first = await renderVegaSvg(CLIPPED, { idPrefix: 'first' });
    const second = await renderVegaSvg(CLIPPED, { idPrefix: 'second' });
    expect(first).toContain('<clipPath id="first-clip1">');
    expect(first).toContain('clip-path="url(#first-clip1)"');
    expect(second).toContain('clip-path="url(#second-clip1)"');
    // Nothing but the ids changed.
    expect(first.replaceAll('first-', '')).toBe(plain);
  });

  it('refuses an id prefix that is not a plain name', async () => {
    await expectPolyquantError(renderVegaSvg(CLIPPED, { idPrefix: 'a"b' }), ERROR_CODES.USAGE, 'SVG id prefix');
    await expectPolyquantError(renderVegaSvg(CLIPPED, { idPrefix: '1abc' }), ERROR_CODES.USAGE, 'not a plain name');
  });
});

describe('page scaffolding', () => {
  it('escapes the five markup characters in text and attributes', () => {
    expect(escapeHtml(`<a href="x">&'`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
    const table = htmlTable(['<th>'], [[{ text: '<td>', title: '"t"', data: { value: '1<2', 'Bad Name': 'x' } }]], { numeric: [0] });
    expect(table).toContain('<th class="num">&lt;th&gt;</th>');
    expect(table).toContain('<td class="num" title="&quot;t&quot;" data-value="1&lt;2">&lt;td&gt;</td>');
    expect(table).not.toContain('Bad Name');
    expect(chartFigure('c', '<svg/>', 'a < b', { rows: 2 })).toContain('data-chart="c" data-rows="2">');
  });

  it('forbids every network request through its Content Security Policy, and escapes the title', () => {
    const page = htmlPage({ title: 'a <b> & c', body: '<p>x</p>' });
    expect(page).toContain(`<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">`);
    expect(page).toContain('<title>a &lt;b&gt; &amp; c</title>');
    expect(page).not.toMatch(/<(script|link)\b/);
  });
});
