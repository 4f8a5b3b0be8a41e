/**
 * Issue #12, baseline reuse: a BaselineSession records the baseline's windows, rows and KOBEST results once
 * and replays them, and a verify that takes its baseline from the session writes the report verify writes
 * on its own — whether the rows came from disk, from a rescore past the row limit, or from another process.
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BaselineSession } from '../src/verify/baseline-session.js';
import type { VerifyReport } from '../src/verify/report.js';
import { scoreBaseline, type VerifyOptions, verify } from '../src/verify/verify.js';
import { HAS_SHARED, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-sweep-baseline-');
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');

function sampleText(): string {
  const path = join(scratch.path, 'sample.txt');
  const sentences = ['서울은 한강을 끼고 있는 큰 도시이다. ', '오늘은 날씨가 맑고 바람이 시원하다. ', 'The quick brown fox jumps over the lazy dog. '];
  writeFileSync(path, Array.from({ length: 60 }, (_, i) => sentences[i % 3]).join(''));
  return path;
}

/** A report without its creation time and provenance (the only fields that differ between two runs). */
const numbers = (report: VerifyReport): Omit<VerifyReport, 'created' | 'provenance'> => {
  const { created: _created, provenance: _provenance, ...rest } = report;
  return rest;
};

describe('BaselineSession', () => {
  const evaluation = (): Omit<VerifyOptions, 'candidate' | 'baseline'> => ({
    pplFiles: [sampleText()],
    ctx: 64,
    maxWindows: 3,
    threads: 1,
    thresholds: { maxKld: 1 },
  });

  it('gives verify the report it writes without a session, recording once and replaying after', async () => {
    const options = evaluation();
    const plain = await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options });
    const dir = scratch.fresh();
    const session = await BaselineSession.create({ baseline: TINY, verify: options, dir, key: 'test-key' });
    try {
      const first = await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options, baselineSession: session });
      expect(session.stats).toMatchObject({ engineLoads: 1, windowsScored: 3, windowsReplayed: 0 });
      const second = await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options, baselineSession: session });
      const other = await verify({ candidate: TINY, baseline: TINY, simulate: 'q8_0', ...options, baselineSession: session });
      expect(session.stats).toMatchObject({ engineLoads: 1, windowsScored: 3, windowsReplayed: 6 });
      expect(numbers(first)).toEqual(numbers(plain));
      expect(numbers(second)).toEqual(numbers(plain));
      const q8 = await verify({ candidate: TINY, baseline: TINY, simulate: 'q8_0', ...options });
      expect(numbers(other)).toEqual(numbers(q8));
      expect(session.stats.rowBytes).toBe(3 * 63 * 384 * 4);
    } finally {
      await session.close();
    }
    // Another process with the same key replays from disk without loading the baseline at all.
    const again = await BaselineSession.create({ baseline: TINY, verify: options, dir, key: 'test-key' });
    const third = await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options, baselineSession: again });
    await again.close();
    expect(again.stats).toMatchObject({ engineLoads: 0, windowsScored: 0, windowsReplayed: 3 });
    expect(numbers(third)).toEqual(numbers(plain));
    // And one with another key reads none of it.
    const stranger = await BaselineSession.create({ baseline: TINY, verify: options, dir, key: 'other-key' });
    await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options, baselineSession: stranger });
    await stranger.close();
    expect(stranger.stats).toMatchObject({ engineLoads: 1, windowsScored: 3, windowsReplayed: 0 });
  });

  it('keeps rows only up to its limit and rescores the windows past it, with the same numbers', async () => {
    const options = evaluation();
    const plain = await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options });
    const dir = scratch.fresh();
    // Room for one window's rows (63 positions × 384 floats).
    const session = await BaselineSession.create({ baseline: TINY, verify: options, dir, key: 'limit', maxRowBytes: 63 * 384 * 4 + 100 });
    try {
      await scoreBaseline(session, { baseline: TINY, ...options });
      expect(session.stats).toMatchObject({ windowsScored: 3, rowBytes: 63 * 384 * 4 });
      const replayed = await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options, baselineSession: session });
      expect(session.stats).toMatchObject({ engineLoads: 1, windowsScored: 5, windowsReplayed: 1 });
      expect(numbers(replayed)).toEqual(numbers(plain));
    } finally {
      await session.close();
    }
    const none = await BaselineSession.create({ baseline: TINY, verify: options, dir: scratch.fresh(), key: 'none', maxRowBytes: 0 });
    const rescored = await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options, baselineSession: none });
    await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options, baselineSession: none });
    await none.close();
    expect(none.stats).toMatchObject({ rowBytes: 0, windowsScored: 6, windowsReplayed: 0 });
    expect(numbers(rescored)).toEqual(numbers(plain));
  });

  it('replays scalars without rows when KL divergence is off', async () => {
    const options = { ...evaluation(), kld: false };
    const plain = await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options });
    const dir = scratch.fresh();
    const session = await BaselineSession.create({ baseline: TINY, verify: options, dir, key: 'nokld' });
    await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options, baselineSession: session });
    const replayed = await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options, baselineSession: session });
    await session.close();
    expect(session.stats).toMatchObject({ windowsScored: 3, windowsReplayed: 3, rowBytes: 0 });
    expect(numbers(replayed)).toEqual(numbers(plain));
    expect(readdirSync(dir).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });

  it.skipIf(!HAS_SHARED)('replays the baseline KOBEST results', async () => {
    const options: Omit<VerifyOptions, 'candidate' | 'baseline'> = { kobestDir: sharedPath('data', 'kobest'), tasks: ['copa'], split: 'validation', limit: 6, threads: 1 };
    const plain = await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options });
    const session = await BaselineSession.create({ baseline: TINY, verify: options, dir: scratch.fresh(), key: 'kobest' });
    await scoreBaseline(session, { baseline: TINY, ...options });
    const replayed = await verify({ candidate: TINY, baseline: TINY, simulate: 'q4_0', ...options, baselineSession: session });
    await session.close();
    expect(session.stats).toMatchObject({ kobestScored: 1, kobestReplayed: 1 });
    expect(numbers(replayed)).toEqual(numbers(plain));
  });
});
