/**
 * Opens a report page (verify --html, convert --html) from its file:// URL in Debian's headless Chromium,
 * driven by playwright-core (never a downloaded browser), with the network cut off, and records what a
 * self-contained page must not do: console errors, page errors, and any request beyond the page itself.
 */
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { Browser, Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
export const HAS_CHROMIUM = existsSync(CHROMIUM);
export const NO_CHROMIUM_REASON = `no Chromium at ${CHROMIUM} (apt-get install chromium)`;

export interface OpenedPage {
  readonly tab: Page;
  /** Console messages of type error or warning, and uncaught page errors. */
  readonly problems: string[];
  /** Every URL the page requested, the page itself first. */
  readonly requests: string[];
  readonly url: string;
  /** Number of elements matching a CSS selector. */
  count(selector: string): Promise<number>;
  /** Text content of each element matching a CSS selector. */
  texts(selector: string): Promise<string[]>;
  close(): Promise<void>;
}

export async function openHtmlFile(file: string, viewport = { width: 1200, height: 900 }): Promise<OpenedPage> {
  const { chromium } = await import('playwright-core');
  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-first-run', '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport, deviceScaleFactor: 1, offline: true });
    const tab = await context.newPage();
    const problems: string[] = [];
    const requests: string[] = [];
    tab.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') problems.push(`${message.type()}: ${message.text()}`);
    });
    tab.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
    tab.on('request', (request) => requests.push(request.url()));
    const url = pathToFileURL(file).href;
    await tab.goto(url, { waitUntil: 'load' });
    return {
      tab,
      problems,
      requests,
      url,
      count: (selector) => tab.locator(selector).count(),
      texts: (selector) => tab.locator(selector).allTextContents(),
      close: () => browser.close(),
    };
  } catch (error) {
    await browser.close();
    throw error;
  }
}
