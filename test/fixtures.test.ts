import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BUNDLED_TINY_DIR, BUNDLED_TINY_OPTIONS } from '../src/synth/fixtures.js';
import { synthCheckpoint } from '../src/synth/synth.js';
import { REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir();
afterAll(() => scratch.remove());

describe('the bundled tiny model', () => {
  it('is exactly what `npm run fixtures` generates', async () => {
    const committed = join(REPO_ROOT, BUNDLED_TINY_DIR);
    const fresh = join(scratch.path, 'tiny-neox');
    await synthCheckpoint({ ...BUNDLED_TINY_OPTIONS, out: fresh });
    const names = readdirSync(committed).sort();
    expect(readdirSync(fresh).sort()).toEqual(names);
    for (const name of names) {
      const same = readFileSync(join(fresh, name)).equals(readFileSync(join(committed, name)));
      expect(same, `${name} differs from a fresh generation: run npm run fixtures`).toBe(true);
    }
  });
});
