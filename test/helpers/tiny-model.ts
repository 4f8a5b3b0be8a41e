/** Tiny GPT-NeoX checkpoints in temp folders, made by the project's own generator. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SYNTH_PRESETS } from '../../src/synth/presets.js';
import { type SynthOptions, synthCheckpoint } from '../../src/synth/synth.js';

export function tempDir(prefix = 'polyquant-test-'): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
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
