#!/usr/bin/env node
/**
 * Bundles the browser page (src/page/main.ts with the WGSL runtime, the tokenizer and what they import)
 * into one ES module, `app.js`, next to a copy of src/page/index.html. `npm run build` writes dist/page/
 * (what `polyquant serve` serves); tests call buildPage(dir) for a fresh bundle of the sources.
 *
 *   node scripts/build-page.mjs [OUT_DIR]        (default dist/page)
 */
import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export async function buildPage(outDir = join(root, 'dist', 'page')) {
  const { build } = await import('esbuild');
  await mkdir(outDir, { recursive: true });
  await build({
    entryPoints: [join(root, 'src', 'page', 'main.ts')],
    outfile: join(outDir, 'app.js'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    sourcemap: true,
    logLevel: 'warning',
    // Node built-ins must never reach the page: a stray import fails the build instead of shipping a stub.
    external: [],
  });
  await copyFile(join(root, 'src', 'page', 'index.html'), join(outDir, 'index.html'));
  return outDir;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await buildPage(process.argv[2] === undefined ? undefined : resolve(process.argv[2]));
}
