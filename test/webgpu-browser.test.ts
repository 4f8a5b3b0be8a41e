/// <reference types="@webgpu/types" />
/**
 * The browser page in real Chromium: `polyquant serve` serves a converted WebGPU folder and the bundled
 * page; headless Chromium (Debian's, driven by playwright-core, WebGPU on SwiftShader through
 * --enable-unsafe-webgpu) loads it; the page's logits for its fixed prompt must equal the Node runtime's
 * (Dawn) within 1e-4, and its greedy continuation must be the Node runtime's. The test saves a
 * screenshot (bench/out/serve-page.png).
 *
 * Skips, saying why, where Chromium or a WebGPU adapter is missing; `.ci/run` installs both.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPage } from '../scripts/build-page.mjs';
import { convertToWebGpu } from '../src/converters/webgpu/convert.js';
import { FIXED_PROMPT } from '../src/page/fixed-prompt.js';
import { WebGpuModel, type WeightSource } from '../src/runtime/webgpu/index.js';
import { type RunningServer, serve } from '../src/serve/serve.js';
import { openTestDevice } from './helpers/webgpu.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const CHROMIUM = '/usr/bin/chromium';
const MODEL = HAS_SHARED ? POLYGLOT_TINY_DIR : join(REPO_ROOT, 'fixtures', 'tiny-neox');
const NEW_TOKENS = 8;
const { dawn, reason } = existsSync(CHROMIUM) ? await openTestDevice() : { dawn: undefined, reason: `no Chromium at ${CHROMIUM} (apt-get install chromium)` };
if (dawn === undefined) console.warn(`webgpu-browser tests skipped: ${reason}`);

const scratch = tempDir('polyquant-browser-');

function folderSource(dir: string): WeightSource {
  return {
    readJson: async (name) => JSON.parse(readFileSync(join(dir, name), 'utf8')) as unknown,
    readBytes: async (name) => new Uint8Array(readFileSync(join(dir, name))),
  };
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if ((row[i] as number) > (row[best] as number)) best = i;
  return best;
}

interface PageState {
  status: string;
  error?: string;
  adapter?: { vendor: string; architecture: string; description: string; software: boolean; shaderF16: boolean };
  quantization?: string;
  fixedTokens?: number[];
  fixedLogits?: number[];
  continuation?: { tokens: number[]; text: string; tokensPerSecond: number };
}

describe.skipIf(dawn === undefined)('the WebGPU page in headless Chromium', () => {
  let server: RunningServer;
  let folder: string;
  let page: PageState;
  let screenshot: string;

  beforeAll(async () => {
    folder = join(scratch.path, 'webgpu');
    await convertToWebGpu(MODEL, { types: ['q4f32_1'], out: folder, workers: 0 });
    const pageDir = await buildPage(join(scratch.path, 'page'));
    server = await serve(folder, { port: 0, pageDir });
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-first-run', '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu'],
    });
    try {
      const tab = await browser.newPage({ viewport: { width: 900, height: 640 } });
      const console: string[] = [];
      tab.on('console', (message) => console.push(`${message.type()}: ${message.text()}`));
      tab.on('pageerror', (error) => console.push(`pageerror: ${error.message}`));
      await tab.goto(`${server.url}?tokens=${NEW_TOKENS}`);
      await tab.waitForFunction(() => ['done', 'error'].includes((globalThis as unknown as { polyquant?: { status: string } }).polyquant?.status ?? ''), undefined, {
        timeout: 240_000,
        polling: 250,
      });
      page = (await tab.evaluate(() => (globalThis as unknown as { polyquant: unknown }).polyquant)) as PageState;
      if (page.status === 'error') throw new Error(`the page failed: ${page.error}\n${console.join('\n')}`);
      mkdirSync(join(REPO_ROOT, 'bench', 'out'), { recursive: true });
      screenshot = join(REPO_ROOT, 'bench', 'out', 'serve-page.png');
      await tab.screenshot({ path: screenshot, fullPage: true });
    } finally {
      await browser.close();
    }
  }, 300_000);

  afterAll(async () => {
    await server?.close();
    dawn?.release();
    scratch.remove();
  });

  it('runs on a WebGPU adapter in the browser and loads the served folder', () => {
    expect(page.status).toBe('done');
    // SwiftShader here ({vendor: google, architecture: swiftshader, software: true}); a GPU elsewhere.
    expect(page.adapter?.vendor || page.adapter?.architecture || page.adapter?.description).toBeTruthy();
    expect(typeof page.adapter?.software).toBe('boolean');
    expect(page.quantization).toBe('q4f32_1');
    expect(existsSync(screenshot)).toBe(true);
  });

  it("gives the fixed prompt's logits of the Node runtime within 1e-4, and the same greedy continuation", async () => {
    const device = dawn!.device;
    const tokenizerJson = JSON.parse(readFileSync(join(folder, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    const tokenizer = new Tokenizer(tokenizerJson, {});
    const tokens = Int32Array.from(tokenizer.encode(FIXED_PROMPT, { add_special_tokens: false }).ids);
    expect(page.fixedTokens).toEqual(Array.from(tokens));
    const model = await WebGpuModel.load(device, folderSource(folder), { adapterInfo: dawn!.adapterInfo });
    try {
      const cache = model.newCache();
      const logits = await model.forward(tokens, cache, { logitsFrom: tokens.length - 1 });
      cache.dispose();
      const browser = page.fixedLogits ?? [];
      expect(browser.length).toBe(logits.length);
      let worst = 0;
      for (let i = 0; i < logits.length; i++) worst = Math.max(worst, Math.abs((logits[i] as number) - (browser[i] as number)));
      console.log(`browser vs Node logits: max |Δ| ${worst.toExponential(2)} over ${logits.length}; page ${page.continuation?.tokensPerSecond.toFixed(2)} tokens/s`);
      expect(worst).toBeLessThanOrEqual(1e-4);

      // The page's greedy continuation of its default prompt, token for token.
      const prompt = '대한민국의 수도는';
      const ids = Int32Array.from(tokenizer.encode(prompt, { add_special_tokens: false }).ids);
      const greedy: number[] = [];
      const generation = model.newCache();
      let row = await model.forward(ids, generation, { logitsFrom: ids.length - 1 });
      for (let step = 0; step < NEW_TOKENS; step++) {
        greedy.push(argmax(row));
        if (step + 1 < NEW_TOKENS) row = await model.forward(Int32Array.of(greedy[step] as number), generation);
      }
      generation.dispose();
      expect(page.continuation?.tokens).toEqual(greedy);
    } finally {
      model.dispose();
    }
  }, 120_000);
});
