/**
 * Issue #15 items 12 and 13: the package as npm ships it. `npm pack` the checkout (its built dist/), check
 * what the tarball holds, install it into an empty folder with the README's CPU-only recipe (so no GPU
 * build of node-llama-cpp is fetched), and there run the installed `polyquant --version`, `--help` and
 * `demo`, and the README's library example through `import 'polyquant'`.
 *
 * Needs dist/ (built by `npm ci` / `npm run build`) and npm with its registry or a warm cache (CI has
 * both); about a minute. POLYQUANT_SKIP_PACKAGE_TEST=1 skips it.
 */
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const run = promisify(execFile);
const OWN = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { name: string; version: string; files: string[] };
const README = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
const HAS_DIST = existsSync(join(REPO_ROOT, 'dist', 'index.js')) && existsSync(join(REPO_ROOT, 'dist', 'cli', 'bin.js'));
const SKIP = process.env['POLYQUANT_SKIP_PACKAGE_TEST'] === '1';

/** The fenced block of `language` right after the README comment that starts with `marker`. */
function readmeBlock(marker: string, language: string): string {
  const start = README.indexOf(`<!-- ${marker}`);
  expect(start, `README has the ${marker} block`).toBeGreaterThanOrEqual(0);
  const match = new RegExp(`^\`\`\`${language}\\n([\\s\\S]*?)^\`\`\``, 'm').exec(README.slice(start));
  expect(match, `a \`\`\`${language} block follows <!-- ${marker}`).not.toBeNull();
  return match?.[1] ?? '';
}

/**
 * The environment for npm and the installed CLI: without the npm_* variables of an `npm test` run
 * (npm_config_local_prefix would point a nested `npm install` at this checkout) and without NODE_OPTIONS.
 */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^npm_/i.test(key) && key !== 'NODE_OPTIONS' && !key.startsWith('VITEST')) env[key] = value;
  }
  return { ...env, ONNXRUNTIME_NODE_INSTALL: 'skip', POLYQUANT_PROGRESS: 'plain', NO_COLOR: '1' };
}

interface PackResult {
  filename: string;
  files: { path: string; size: number }[];
}

describe.skipIf(!HAS_DIST || SKIP)('the packed tarball, installed into an empty folder', () => {
  const scratch = tempDir('polyquant-package-');
  afterAll(() => scratch.remove());
  const consumer = join(scratch.path, 'consumer');
  let packed: PackResult;
  let tarball: string;
  const cli = (...args: string[]) => run(join(consumer, 'node_modules', '.bin', 'polyquant'), args, { cwd: consumer, env: cleanEnv(), maxBuffer: 1 << 24 });

  beforeAll(async () => {
    // The checkout's dist/ as it is (scripts off: `prepare` would rebuild it under other tests' feet).
    const pack = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', scratch.path], { cwd: REPO_ROOT, env: cleanEnv(), maxBuffer: 1 << 26 });
    const [result] = JSON.parse(pack.stdout) as PackResult[];
    if (result === undefined) throw new Error(`npm pack printed no result: ${pack.stdout}`);
    packed = result;
    tarball = join(scratch.path, packed.filename);
    // A project of someone else's (its own name and version), with the README's CPU-only recipe.
    mkdirSync(join(consumer, 'empty-optional'), { recursive: true });
    writeFileSync(join(consumer, 'empty-optional', 'package.json'), JSON.stringify({ name: 'empty-optional', version: '0.0.0' }));
    const recipe = JSON.parse(readmeBlock('cpu-only-package-json', 'json')) as Record<string, unknown>;
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'someone-elses-project', version: '7.7.7', type: 'module', ...recipe }, null, 2));
    await run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel', 'error'], { cwd: consumer, env: cleanEnv(), maxBuffer: 1 << 26 });
  }, 600_000);

  it('ships the built code, the tiny model, LICENSE and README, and no tests, sources, source maps or scratch files', () => {
    const paths = packed.files.map((file) => file.path);
    expect(paths).toEqual(expect.arrayContaining(['LICENSE', 'README.md', 'package.json', 'bin/polyquant.js', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/bin.js']));
    expect(paths).toEqual(expect.arrayContaining(['fixtures/tiny-neox/config.json', 'fixtures/tiny-neox/tokenizer.json', 'native/llama-scorer.cc', 'scripts/build-native.mjs']));
    expect(paths.filter((path) => path.endsWith('.map'))).toEqual([]);
    expect(paths.filter((path) => /^(src|test|bench|assembly|docs|examples|\.scratch|\.ci|node_modules)\//.test(path))).toEqual([]);
    // Every compiled module comes from a source file of this checkout (no leftovers of deleted ones).
    const stale = paths.filter((path) => /^dist\/.*\.js$/.test(path) && !path.startsWith('dist/page/') && !existsSync(join(REPO_ROOT, path.replace(/^dist\//, 'src/').replace(/\.js$/, '.ts'))));
    expect(stale).toEqual([]);
    const license = readFileSync(join(consumer, 'node_modules', 'polyquant', 'LICENSE'), 'utf8');
    expect(license).toMatch(/^\s*Apache License\s+Version 2\.0, January 2004/);
    expect(license).toContain('END OF TERMS AND CONDITIONS');
    expect(OWN.files).toContain('LICENSE');
  });

  it('installs without any GPU build of node-llama-cpp: the recipe points each at the empty package', () => {
    const builds = join(consumer, 'node_modules', '@node-llama-cpp');
    for (const name of ['linux-x64-cuda', 'linux-x64-cuda-ext', 'linux-x64-vulkan']) {
      const path = join(builds, name);
      if (!existsSync(path)) continue;
      expect(lstatSync(path).isSymbolicLink(), name).toBe(true);
      expect(readlinkSync(path)).toMatch(/empty-optional$/);
    }
  });

  it("prints polyquant's own version from inside another project, and its help", async () => {
    const version = await cli('--version');
    expect(version.stdout.trim()).toBe(OWN.version);
    const help = await cli('--help');
    for (const command of ['demo', 'inspect', 'convert', 'verify', 'sweep', 'synth', 'serve']) expect(help.stdout).toContain(`polyquant ${command}`);
    expect(help.stdout).not.toContain('../shared');
  });

  it('runs demo on the bundled tiny model from the installed package', async () => {
    const demo = await cli('demo');
    expect(demo.stdout).toMatch(/tiny-neox +gguf f16 .* pass/);
    expect(demo.stdout).toMatch(/tiny-neox +gguf q4_k_m .* pass/);
    expect(demo.stdout).toMatch(/tiny-neox +onnx q4 .* pass/);
    expect(demo.stdout).toContain('verdict: pass');
    // Progress in plain lines: no escape codes reach a log.
    expect(demo.stderr).not.toContain('\u001b');
  }, 180_000);

  it("runs the README's library example as written, printing what the README shows", async () => {
    writeFileSync(join(consumer, 'example.mjs'), readmeBlock('library-example', 'js'));
    const example = await run(process.execPath, ['example.mjs'], { cwd: consumer, env: cleanEnv() });
    const shown = /```console\n\$ node example\.mjs\n([\s\S]*?)```/.exec(README.slice(README.indexOf('<!-- library-example')))?.[1] ?? '';
    const [kernelsLine, modelLine] = example.stdout.trimEnd().split('\n');
    const [shownKernels, shownModel] = shown.trimEnd().split('\n');
    // The kernels are exact: the same line. The model line's numbers come from llama.cpp's float sums.
    expect(kernelsLine).toBe(shownKernels);
    expect(kernelsLine).toMatch(/^Q8_0: 136 bytes, max \|error\| 0\.00\d\d$/);
    expect(modelLine).toMatch(/^tiny-q4_k_m\.gguf: ppl [+-]\d+\.\d\d %, top-1 \d+\.\d %: pass$/);
    expect(shownModel).toMatch(/^tiny-q4_k_m\.gguf: ppl [+-]\d+\.\d\d %, top-1 \d+\.\d %: pass$/);
    expect(existsSync(join(consumer, 'tiny-q4_k_m.gguf'))).toBe(true);
  }, 180_000);
});
