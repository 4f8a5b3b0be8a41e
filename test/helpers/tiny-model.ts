/** Tiny GPT-NeoX checkpoints in temp folders, made by the project's own generator. */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SYNTH_PRESETS } from '../../src/synth/presets.js';
import { type SynthOptions, synthCheckpoint } from '../../src/synth/synth.js';

/** A temp folder for a test file: `fresh()` makes a new empty case folder inside it, `remove()` deletes it all. */
export function tempDir(prefix = 'polyquant-test-'): { path: string; remove: () => void; fresh: () => string } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  let cases = 0;
  return {
    path,
    remove: () => rmSync(path, { recursive: true, force: true }),
    fresh: () => {
      cases += 1;
      const dir = join(path, `case-${cases}`);
      mkdirSync(dir);
      return dir;
    },
  };
}

export async function makeTinyModel(
  dir: string,
  overrides: Partial<Omit<SynthOptions, 'out'>> & { configPatch?: Record<string, unknown> } = {},
): Promise<string> {
  const { configPatch, ...rest } = overrides;
  const out = join(dir, `model-${Math.random().toString(36).slice(2, 8)}`);
  await synthCheckpoint({
    config: { ...SYNTH_PRESETS.tiny.config, ...configPatch },
    out,
    format: 'safetensors',
    seed: 1,
    dtype: 'F16',
    shardBytes: undefined,
    buffers: true,
    tokenizerDir: undefined,
    ...rest,
  });
  return out;
}
