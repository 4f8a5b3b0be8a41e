/** Regenerates the bundled tiny model: `npm run fixtures`. */
import { resolve } from 'node:path';
import { BUNDLED_TINY_DIR, BUNDLED_TINY_OPTIONS } from '../src/synth/fixtures.js';
import { synthCheckpoint } from '../src/synth/synth.js';

const out = resolve(import.meta.dirname, '..', BUNDLED_TINY_DIR);
const result = await synthCheckpoint({ ...BUNDLED_TINY_OPTIONS, out, force: true });
process.stdout.write(`wrote ${result.files.join(', ')} to ${result.dir}\n`);
