/**
 * Issue #15 item 13: help texts read right for someone who installed the package. No help mentions
 * `../shared` (the development data folder next to a checkout, which an installed package never has),
 * every command is reached from the top-level help, and the thread count is `--threads` everywhere
 * (convert keeps `--workers` as an alias).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';

/** What `polyquant ARGV` prints, wherever yargs prints it (console.log in-process, or the CLI's stdout). */
async function printed(...argv: string[]): Promise<string> {
  const lines: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((...items: unknown[]) => {
    lines.push(items.map(String).join(' '));
  });
  try {
    const run = await runCli(...argv);
    expect(run.code, `${argv.join(' ')}: ${run.stderr}`).toBe(0);
    return `${lines.join('\n')}${run.stdout}`;
  } finally {
    spy.mockRestore();
  }
}

const helpOf = (...argv: string[]): Promise<string> => printed(...argv, '--help');

/** The commands a help text lists: `polyquant sweep merge DIR…` → `sweep merge`. */
function listedCommands(help: string, prefix: readonly string[]): string[][] {
  const commands: string[][] = [];
  for (const match of help.matchAll(/^ {2}polyquant ((?:[a-z][\w-]* ?)+)/gm)) {
    const words = (match[1] ?? '').trim().split(' ');
    if (prefix.every((word, index) => words[index] === word) && words.length > prefix.length) commands.push(words.slice(0, prefix.length + 1));
  }
  return commands;
}

afterEach(() => vi.restoreAllMocks());

describe('help texts', () => {
  it("never mention ../shared, in the top-level help and every command's and subcommand's", async () => {
    const top = await helpOf();
    const commands = listedCommands(top, []);
    expect(commands.map((words) => words.join(' '))).toEqual(expect.arrayContaining(['inspect', 'synth', 'convert', 'verify', 'demo', 'serve', 'sweep']));
    const seen: string[] = [];
    const texts: [string, string][] = [['polyquant', top]];
    for (const command of commands) {
      const help = await helpOf(...command);
      texts.push([command.join(' '), help]);
      for (const sub of listedCommands(help, command)) {
        if (sub.join(' ') === command.join(' ')) continue;
        texts.push([sub.join(' '), await helpOf(...sub)]);
      }
    }
    for (const [name, text] of texts) {
      seen.push(name);
      expect(text.length, name).toBeGreaterThan(100);
      expect(text, `${name} --help`).not.toContain('../shared');
      expect(text, `${name} --help`).not.toMatch(/\bshared\/(data|fixtures)/);
    }
    expect(seen).toEqual(expect.arrayContaining(['sweep merge', 'sweep report']));
  });

  it('names the thread count --threads in every command that has one, convert keeping --workers as an alias', async () => {
    for (const command of ['convert', 'verify', 'demo', 'sweep']) {
      expect(await helpOf(command), command).toMatch(/^ {2}--threads\b/m);
    }
    expect(await helpOf('convert')).toMatch(/^ {2}--threads, --workers\b/m);
  });

  it('prints the version of polyquant itself, not of the folder it runs in', async () => {
    const own = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    const cwd = process.cwd();
    const other = mkdtempSync(join(tmpdir(), 'polyquant-version-'));
    writeFileSync(join(other, 'package.json'), JSON.stringify({ name: 'someone-else', version: '9.9.9' }));
    process.chdir(other);
    try {
      expect((await printed('--version')).trim()).toBe(own);
    } finally {
      process.chdir(cwd);
      rmSync(other, { recursive: true, force: true });
    }
  });
});
