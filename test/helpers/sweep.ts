/** Helpers for the sweep tests: cell records without their timings, compared number by number. */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { SweepCellRecord } from '../../src/sweep/records.js';

/**
 * Fields that measure time (or say when or where a cell ran), not the cell's result; `provenance` is a
 * verify report's (and sweep.json's) record of when, where and from which command line it ran.
 */
const TIMING_FIELDS = new Set(['convertSeconds', 'verifySeconds', 'convert_seconds', 'verify_seconds', 'created', 'seconds', 'shard', 'provenance']);

/** A record with every timing field removed, at any depth. */
export function withoutTimings(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutTimings);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).filter(([key]) => !TIMING_FIELDS.has(key)).map(([key, item]) => [key, withoutTimings(item)]));
  }
  return value;
}

/**
 * Two results equal number for number. KL divergences are summed in C++ once a llama.cpp engine has been
 * loaded in the process and in JavaScript before (the same formula and order, within 1e-12: DESIGN-NOTES
 * "verify"), so which cell ran first in a process moves the last digits; every other field must match.
 */
export function expectSameNumbers(actual: unknown, expected: unknown, path = '$'): void {
  if (typeof expected === 'number' && typeof actual === 'number') {
    if (actual === expected) return;
    const scale = Math.max(Math.abs(expected), Math.abs(actual), 1e-300);
    expect(Math.abs(actual - expected) / scale, `${path}: ${actual} vs ${expected}`).toBeLessThan(1e-9);
    return;
  }
  if (Array.isArray(expected)) {
    expect(Array.isArray(actual), path).toBe(true);
    expect((actual as unknown[]).length, `${path}.length`).toBe(expected.length);
    for (const [index, item] of expected.entries()) expectSameNumbers((actual as unknown[])[index], item, `${path}[${index}]`);
    return;
  }
  if (expected !== null && typeof expected === 'object') {
    expect(actual !== null && typeof actual === 'object', path).toBe(true);
    expect(Object.keys(actual as object).sort(), path).toEqual(Object.keys(expected).sort());
    for (const [key, item] of Object.entries(expected)) expectSameNumbers((actual as Record<string, unknown>)[key], item, `${path}.${key}`);
    return;
  }
  expect(actual, path).toEqual(expected);
}

/** The cell files of a sweep folder, by id. */
export function cellRecords(dir: string): Map<string, SweepCellRecord> {
  const folder = join(dir, 'cells');
  const records = new Map<string, SweepCellRecord>();
  for (const name of readdirSync(folder).filter((file) => file.endsWith('.json') && !file.startsWith('.')).sort()) {
    const record = JSON.parse(readFileSync(join(folder, name), 'utf8')) as SweepCellRecord;
    records.set(record.id, record);
  }
  return records;
}

/** A small Korean/English text for the bundled tiny model (any text tokenizes with its byte-level BPE). */
export function sampleTextContent(): string {
  const sentences = ['서울은 한강을 끼고 있는 큰 도시이다. ', '오늘은 날씨가 맑고 바람이 시원하다. ', 'The quick brown fox jumps over the lazy dog. '];
  return Array.from({ length: 60 }, (_, i) => sentences[i % 3]).join('');
}
