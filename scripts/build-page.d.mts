/** Bundles src/page into `outDir` (default dist/page): app.js, app.js.map, index.html. Resolves to outDir. */
export function buildPage(outDir?: string): Promise<string>;
