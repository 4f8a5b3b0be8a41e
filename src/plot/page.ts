/**
 * Self-contained HTML report pages (`verify --html`, `convert --dry-run --error --html`): one file with
 * inline CSS and inline SVG charts (plot/vega.ts), no script, font, stylesheet or image from anywhere, so it
 * opens from a file:// URL offline and can be attached to a release or a CI run as is. A Content Security
 * Policy of `default-src 'none'` makes the browser refuse any request the markup might still try.
 *
 * Every string that comes from the user or their files (paths, task names, tensor names) goes through
 * `escapeHtml`; the Vega SVGs escape their own text.
 */

/** Escapes the five characters that are markup in HTML text and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (character) => HTML_ESCAPES[character as keyof typeof HTML_ESCAPES]);
}

const HTML_ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' } as const;

/** A table cell: plain text (escaped here), or text with a class, a tooltip and `data-*` attributes. */
export type Cell =
  | string
  | {
      readonly text: string;
      /** A second, smaller line under the text (an uncertainty, a unit). */
      readonly detail?: string;
      readonly className?: string;
      readonly title?: string;
      /** `data-NAME` attributes (names: lower-case letters, digits and `-`), e.g. the exact number behind rounded text. */
      readonly data?: Readonly<Record<string, string>>;
    };

/** An HTML table; `numeric` columns (by index) are right-aligned in tabular figures. */
export function htmlTable(header: readonly string[], rows: readonly (readonly Cell[])[], options: { readonly id?: string; readonly numeric?: readonly number[] } = {}): string {
  const numeric = new Set(options.numeric ?? []);
  const cell = (tag: 'td' | 'th', value: Cell, column: number): string => {
    const item = typeof value === 'string' ? { text: value } : value;
    const classes = [numeric.has(column) ? 'num' : '', item.className ?? ''].filter((name) => name !== '').join(' ');
    const data = dataAttributes(item.data ?? {});
    const attributes = `${classes === '' ? '' : ` class="${classes}"`}${item.title === undefined ? '' : ` title="${escapeHtml(item.title)}"`}${data}`;
    const detail = item.detail === undefined ? '' : `<span class="detail"> ${escapeHtml(item.detail)}</span>`;
    return `<${tag}${attributes}>${escapeHtml(item.text)}${detail}</${tag}>`;
  };
  return [
    `<div class="table-wrap"><table${options.id === undefined ? '' : ` id="${escapeHtml(options.id)}"`}>`,
    `<thead><tr>${header.map((title, column) => cell('th', title, column)).join('')}</tr></thead>`,
    '<tbody>',
    ...rows.map((row) => `<tr>${row.map((value, column) => cell('td', value, column)).join('')}</tr>`),
    '</tbody>',
    '</table></div>',
  ].join('\n');
}

/**
 * A chart in a `<figure>`: `name` becomes `data-chart` (what tests and readers look it up by), `data` more
 * `data-*` attributes (names: lower-case letters, digits and `-`) saying what was drawn.
 */
export function chartFigure(name: string, svg: string, caption: string, data: Readonly<Record<string, string | number>> = {}): string {
  return `<figure class="chart" data-chart="${escapeHtml(name)}"${dataAttributes(data)}>\n${svg}\n<figcaption>${escapeHtml(caption)}</figcaption>\n</figure>`;
}

function dataAttributes(data: Readonly<Record<string, string | number>>): string {
  return Object.entries(data)
    .filter(([name]) => DATA_NAME.test(name))
    .map(([name, value]) => ` data-${name}="${escapeHtml(String(value))}"`)
    .join('');
}

const DATA_NAME = /^[a-z][a-z0-9-]*$/;

/** A note in the page's muted style (a chart that could not be drawn says why here). */
export function note(text: string): string {
  return `<p class="note">${escapeHtml(text)}</p>`;
}

export interface HtmlPageOptions {
  /** The document title (escaped here). */
  readonly title: string;
  /** The body's markup, already escaped where it holds user text. */
  readonly body: string;
}

/** The whole page: doctype, the CSP, the shared stylesheet and the body. */
export function htmlPage(options: HtmlPageOptions): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="generator" content="polyquant">
<title>${escapeHtml(options.title)}</title>
<style>
${PAGE_CSS}
</style>
</head>
<body>
<main>
${options.body}
</main>
</body>
</html>
`;
}

/** The one stylesheet: the charts' font stack, a readable measure, compact tables with tabular figures. */
const PAGE_CSS = `:root { color-scheme: light; --ink: #1f2328; --muted: #555555; --rule: #d0d7de; --pass: #1a7f37; --fail: #cf222e; --band: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; background: #ffffff; color: var(--ink); font: 14px/1.45 "DejaVu Sans", "Liberation Sans", Arial, Helvetica, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--rule); }
h3 { font-size: 14px; margin: 16px 0 6px; }
.subtitle, .note, figcaption, footer { color: var(--muted); }
.note { margin: 6px 0; }
.verdict { font-size: 14px; font-weight: bold; padding: 2px 10px; border-radius: 4px; color: #ffffff; letter-spacing: 0.04em; }
.verdict.pass { background: var(--pass); }
.verdict.fail { background: var(--fail); }
.verdict.none { background: var(--muted); }
.table-wrap { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td .detail { display: block; font-size: 11px; color: var(--muted); }
td.path { font-family: "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace; font-size: 12px; word-break: break-all; }
td.pass { color: var(--pass); font-weight: bold; }
td.fail { color: var(--fail); font-weight: bold; }
figure.chart { margin: 10px 0 18px; }
figure.chart svg { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 12px; margin-top: 4px; max-width: 80ch; }
footer { margin-top: 32px; font-size: 12px; border-top: 1px solid var(--rule); padding-top: 8px; }`;
