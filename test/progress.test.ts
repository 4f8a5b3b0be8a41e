/**
 * Issue #15 item 10: progress. The renderer is driven with a fake stream (TTY or not, 80 or 0 columns) and
 * a fake clock, and what it writes is checked: no rate or ETA before they mean something, bounded output,
 * plain lines without escape codes when the stream is no usable terminal. Then the real CLI runs under
 * util-linux `script` (a pseudo-terminal of 0 and of 80 columns), is sent SIGTERM mid-conversion, and
 * must exit 143 promptly with a bounded amount of output (ora wrote 367 MB of escape codes there before).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createCountProgress,
  createProgress,
  createSweepProgress,
  ETA_AFTER_MS,
  eraseProgress,
  fitToColumns,
  formatDuration,
  PLAIN_INTERVAL_MS,
  type ProgressStream,
  progressMode,
  TTY_INTERVAL_MS,
} from '../src/cli/progress.js';
import { REPO_ROOT } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const ESCAPE = '\u001b';

/** A stream that records every write, with a settable TTY flag and width. */
function fakeStream(isTTY: boolean, columns: number | undefined): ProgressStream & { writes: string[]; text: () => string } {
  const writes: string[] = [];
  return { isTTY, columns, writes, write: (text: string) => writes.push(text), text: () => writes.join('') };
}

/** A clock the test moves by hand. */
function fakeClock(): { now: () => number; advance: (ms: number) => void } {
  let time = 1_000_000;
  return { now: () => time, advance: (ms) => (time += ms) };
}

/** The status lines a TTY shows: the text after each `\r`, without the erase code. */
const redraws = (text: string): string[] =>
  text
    .split('\r')
    .slice(1)
    .map((part) => part.replace(`${ESCAPE}[K`, ''))
    .filter((part) => part !== '');

/** Runs a job of `seconds` with an update every `stepMs`, linear progress over `total` bytes. */
function runJob(progress: ReturnType<typeof createProgress>, clock: ReturnType<typeof fakeClock>, seconds: number, stepMs: number, total = 1e9): void {
  const steps = Math.round((seconds * 1000) / stepMs);
  for (let step = 0; step <= steps; step += 1) {
    progress.update((total * step) / steps, total);
    if (step < steps) clock.advance(stepMs);
  }
}

const env = {};

describe('progress modes', () => {
  it('draws a status line only on a TTY at least 20 columns wide, plain lines otherwise, nothing when quiet', () => {
    expect(progressMode(fakeStream(true, 80), { env })).toBe('tty');
    expect(progressMode(fakeStream(true, 0), { env })).toBe('plain');
    expect(progressMode(fakeStream(true, undefined), { env })).toBe('plain');
    expect(progressMode(fakeStream(false, 80), { env })).toBe('plain');
    expect(progressMode(fakeStream(true, 80), { env: { TERM: 'dumb' } })).toBe('plain');
    expect(progressMode(fakeStream(true, 80), { env, quiet: true })).toBe('off');
    expect(progressMode(fakeStream(true, 80), { env: { POLYQUANT_PROGRESS: 'off' } })).toBe('off');
    expect(progressMode(fakeStream(true, 80), { env: { POLYQUANT_PROGRESS: 'plain' } })).toBe('plain');
  });

  it('writes nothing at all when quiet', () => {
    const stream = fakeStream(true, 80);
    const clock = fakeClock();
    const progress = createProgress('converting', { stream, now: clock.now, env, quiet: true });
    runJob(progress, clock, 5, 10);
    progress.message('a stage');
    progress.line('a line');
    progress.succeed('wrote out.gguf');
    expect(stream.writes).toEqual([]);
  });
});

describe('the status line on a TTY', () => {
  it('shows no rate and no ETA for a 0.7 s job, and redraws at most every 200 ms', () => {
    const stream = fakeStream(true, 80);
    const clock = fakeClock();
    const progress = createProgress('converting', { stream, now: clock.now, env });
    runJob(progress, clock, 0.7, 1);
    progress.succeed('wrote out.gguf');
    const lines = redraws(stream.text());
    expect(lines.length).toBeGreaterThanOrEqual(2);
    expect(lines.length).toBeLessThanOrEqual(Math.ceil(700 / TTY_INTERVAL_MS) + 2);
    expect(stream.text()).not.toMatch(/ETA|\/s/);
    expect(lines[0]).toMatch(/^converting \[-+\] 0\.0%, 0 B \/ 1\.00 GB$/);
    expect(stream.text().endsWith(`\r${ESCAPE}[Kwrote out.gguf\n`)).toBe(true);
  });

  it('adds the rate after 2 s and the ETA after 3 s and 5 %, close to the time really left', () => {
    const stream = fakeStream(true, 80);
    const clock = fakeClock();
    const progress = createProgress('converting', { stream, now: clock.now, env });
    // 100 s of linear progress, one update per 50 ms.
    const shown: { second: number; line: string }[] = [];
    for (let step = 0; step <= 2000; step += 1) {
      const before = stream.writes.length;
      progress.update(step * 500_000, 1e9);
      if (stream.writes.length > before) shown.push({ second: step / 20, line: redraws(stream.writes.slice(before).join('')).at(-1) ?? '' });
      clock.advance(50);
    }
    for (const { second, line } of shown) {
      expect(line.length).toBeLessThanOrEqual(79);
      if (second < 2) expect(line).not.toContain('/s');
      if (second < ETA_AFTER_MS / 1000 || second < 5) expect(line).not.toContain('ETA');
      if (second >= 6 && second < 100) {
        expect(line).toContain('10.0 MB/s');
        const eta = /ETA (?:(\d+)m)?(\d+)s/.exec(line);
        expect(eta, line).not.toBeNull();
        const left = Number(eta?.[1] ?? 0) * 60 + Number(eta?.[2]);
        // Within a second of the truth.
        expect(Math.abs(left - (100 - second))).toBeLessThanOrEqual(1);
      }
    }
    // At most 5 redraws a second: ≤ 501 over 100 s, each under 100 bytes.
    expect(shown.length).toBeLessThanOrEqual(100 * (1000 / TTY_INTERVAL_MS) + 1);
    expect(stream.text().length).toBeLessThan(shown.length * 100);
  });

  it('bounds the output however fast updates come: 100 000 updates in one second draw at most 6 times', () => {
    const stream = fakeStream(true, 80);
    const clock = fakeClock();
    const progress = createProgress('hashing', { stream, now: clock.now, env });
    for (let step = 0; step < 100_000; step += 1) {
      progress.update(step, 100_000);
      clock.advance(0.01);
    }
    expect(stream.writes.length).toBeLessThanOrEqual(6);
  });

  it('never draws wider than the terminal, counting Hangul as two columns, and drops the bar on a narrow one', () => {
    const narrow = fakeStream(true, 30);
    const clock = fakeClock();
    const progress = createProgress('변환 중인 아주 긴 모델 이름 polyglot-ko-3.8b', { stream: narrow, now: clock.now, env });
    progress.update(10, 100);
    const line = redraws(narrow.text())[0] ?? '';
    expect(line).not.toContain('[');
    const width = [...line].reduce((sum, character) => sum + (/[\u1100-\u115f\uac00-\ud7a3]/.test(character) ? 2 : 1), 0);
    expect(width).toBeLessThanOrEqual(29);
    expect(line.endsWith('…')).toBe(true);
    expect(fitToColumns('가'.repeat(50), 20)).toBe(`${'가'.repeat(9)}…`);
    expect(fitToColumns(`a${ESCAPE}[31mb`, 80)).toBe('a [31mb');
  });

  it('erases a drawn status line before an error or interrupt message, and says whether there was one', () => {
    const stream = fakeStream(true, 80);
    const clock = fakeClock();
    const progress = createProgress('converting', { stream, now: clock.now, env });
    progress.update(1, 10);
    expect(eraseProgress()).toBe(true);
    expect(stream.text().endsWith(`\r${ESCAPE}[K`)).toBe(true);
    expect(eraseProgress()).toBe(false);
  });

  it('prints a line above the status and draws the status again below it', () => {
    const stream = fakeStream(true, 80);
    const clock = fakeClock();
    const progress = createProgress('converting', { stream, now: clock.now, env });
    progress.update(1, 10);
    progress.line('warning: something to read');
    const text = stream.text();
    expect(text).toContain(`\r${ESCAPE}[Kwarning: something to read\n\rconverting [`);
  });
});

describe('plain lines when stderr is no usable terminal', () => {
  for (const [name, stream] of [
    ['a pipe', () => fakeStream(false, undefined)],
    ['a 0-column pseudo-terminal', () => fakeStream(true, 0)],
  ] as const) {
    it(`writes no escape codes to ${name}, one line per 10 s plus the start and the end`, () => {
      const out = stream();
      const clock = fakeClock();
      const progress = createProgress('converting', { stream: out, now: clock.now, env });
      runJob(progress, clock, 100, 20);
      progress.succeed('wrote out.gguf');
      const text = out.text();
      expect(text).not.toContain(ESCAPE);
      expect(text).not.toContain('\r');
      const lines = text.trimEnd().split('\n');
      // 0 s, 10 s, …, 100 s, and the end line.
      expect(lines.length).toBe(100_000 / PLAIN_INTERVAL_MS + 2);
      expect(lines[0]).toBe('converting: 0.0%, 0 B / 1.00 GB');
      expect(lines[1]).toBe('converting: 10%, 100 MB / 1.00 GB, 10.0 MB/s, ETA 1m30s');
      expect(lines.at(-1)).toBe('wrote out.gguf');
    });
  }

  it('keeps a quick job to its start line and its end line', () => {
    const out = fakeStream(false, undefined);
    const clock = fakeClock();
    const progress = createProgress('converting', { stream: out, now: clock.now, env });
    runJob(progress, clock, 0.7, 1);
    progress.succeed('wrote out.gguf');
    expect(out.text()).toBe('converting: 0.0%, 0 B / 1.00 GB\nwrote out.gguf\n');
  });
});

describe('verify and sweep progress', () => {
  it('counts KOBEST documents with an ETA only once one means something', () => {
    const out = fakeStream(false, undefined);
    const clock = fakeClock();
    const progress = createCountProgress({ stream: out, now: clock.now, env });
    progress.report({ stage: 'load', model: 'baseline', path: '/models/hf' });
    for (let done = 1; done <= 500; done += 1) {
      clock.advance(100);
      progress.report({ stage: 'kobest', model: 'candidate', task: 'copa', shots: 0, done, total: 500 });
    }
    progress.done();
    const lines = out.text().trimEnd().split('\n');
    expect(lines[0]).toBe('loading the baseline: /models/hf');
    expect(lines[1]).toBe('KOBEST copa 0-shot (candidate): 1/500 documents');
    // 10 s later: 101 documents done in 10 s since the first → 399 left at 10/s.
    expect(lines[2]).toBe('KOBEST copa 0-shot (candidate): 101/500 documents, ETA 40s');
    // The load line, then KOBEST at 0.1 s, 10.1 s, 20.1 s, 30.1 s and 40.1 s (the job ends at 50 s).
    expect(lines.length).toBe(1 + 5);
  });

  it('prints every sweep cell as a line and the steps inside a cell as the status', () => {
    const out = fakeStream(true, 80);
    const clock = fakeClock();
    const progress = createSweepProgress({ stream: out, now: clock.now, env });
    progress.report({ stage: 'cell', index: 1, total: 2, cell: 'gguf q8_0', event: 'start' });
    progress.report({ stage: 'step', index: 1, total: 2, cell: 'gguf q8_0', step: { step: 'convert', done: 5, total: 10 } });
    clock.advance(4000);
    progress.report({ stage: 'cell', index: 1, total: 2, cell: 'gguf q8_0', event: 'done', seconds: 4, verdict: 'pass' });
    progress.report({ stage: 'cell', index: 2, total: 2, cell: 'gguf q4_0', event: 'skip', verdict: 'pass' });
    progress.done();
    const text = out.text();
    expect(text).toContain('[1/2] gguf q8_0: converting and verifying\n');
    expect(text).toContain('\r[1/2] gguf q8_0: converting 50%');
    expect(text).toContain('[1/2] gguf q8_0: pass in 4.0 s, ETA 4s\n');
    expect(text).toContain('[2/2] gguf q4_0: skipped, already done (pass)\n');
  });

  it('formats durations as a short clock', () => {
    expect(formatDuration(0.4)).toBe('0s');
    expect(formatDuration(89)).toBe('89s');
    expect(formatDuration(90)).toBe('1m30s');
    expect(formatDuration(3725)).toBe('62m05s');
    expect(formatDuration(7325)).toBe('2h02m');
  });
});

const HAS_SCRIPT = spawnSync('script', ['--version'], { encoding: 'utf8' }).stdout?.includes('util-linux') === true;

/** The pid of `parent`'s first child (script runs the command in a shell that `exec`s node). */
function childOf(parent: number): number | undefined {
  try {
    const children = readFileSync(`/proc/${parent}/task/${parent}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    return children.length > 0 ? Number(children[0]) : undefined;
  } catch {
    return undefined;
  }
}

describe.skipIf(!HAS_SCRIPT)('the real CLI under script (a pseudo-terminal)', () => {
  const scratch = tempDir('polyquant-progress-');
  let model: string;
  beforeAll(async () => {
    // ~70 M parameters: converting it on one worker takes seconds, so SIGTERM lands mid-conversion.
    model = await makeTinyModel(scratch.path, {
      configPatch: { hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 4, num_attention_heads: 8, vocab_size: 8192 },
      buffers: false,
    });
  }, 120_000);
  afterAll(() => scratch.remove());

  for (const columns of [0, 80]) {
    it(`stops promptly on SIGTERM with exit 143 and bounded output on a ${columns}-column terminal`, async () => {
      const out = join(scratch.fresh(), 'model.gguf');
      const command = `stty cols ${columns} rows 24; exec ${process.execPath} --import tsx src/cli/bin.ts convert ${model} --type q4_k_m --workers 1 --out ${out} > /dev/null`;
      const child: ChildProcess = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], {
        cwd: REPO_ROOT,
        env: { ...process.env, POLYQUANT_PROGRESS: '', TERM: 'xterm' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString('utf8');
      });
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const deadline = Date.now() + 60_000;
      while (!output.includes('converting') && child.exitCode === null && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(output, 'the conversion showed progress').toContain('converting');
      // Let it draw for a while (ora's runaway loop started on the second redraw).
      await new Promise((resolve) => setTimeout(resolve, 800));
      const node = childOf(child.pid as number);
      expect(node, 'script runs node').toBeDefined();
      const signalled = Date.now();
      process.kill(node as number, 'SIGTERM');
      const code = await exited;
      const seconds = (Date.now() - signalled) / 1000;
      expect(code, output).toBe(143);
      expect(seconds).toBeLessThan(5);
      expect(output).toContain('interrupted by SIGTERM');
      expect(output.length).toBeLessThan(16_384);
      if (columns === 0) expect(output).not.toContain(ESCAPE);
      else {
        expect(output).toMatch(/\rconverting \[[#-]{20}\] /);
        // The status line is erased before the message, not run into it.
        expect(output).toMatch(new RegExp(`\r${ESCAPE}\\[Kpolyquant: interrupted by SIGTERM`));
      }
    }, 120_000);
  }
});
