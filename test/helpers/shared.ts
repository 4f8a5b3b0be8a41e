/**
 * Where ../shared lives (next to the repository), and whether it is there. Tests that use the real data
 * skip, not fail, in a fresh clone without it.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');
export const SHARED_DIR = resolve(REPO_ROOT, '..', 'shared');
export const HAS_SHARED = existsSync(join(SHARED_DIR, 'fixtures', 'polyglot-ko-tiny', 'config.json'));

export const sharedPath = (...parts: string[]): string => join(SHARED_DIR, ...parts);
export const POLYGLOT_TINY_DIR = sharedPath('fixtures', 'polyglot-ko-tiny');
export const POLYGLOT_DATA_DIR = sharedPath('data', 'polyglot-ko');
