/**
 * What `polyquant convert` prints (issue 15 item 3): a short summary by default (output, type, size,
 * tensors, seconds) with the warnings on stderr; the per-tensor plan only with --dry-run or --verbose;
 * nothing but errors with --quiet, progress included. Warnings say what to do and cite no document the
 * user does not have.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { runCli } from './helpers/cli.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-convert-output-');
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');

/** The CLI in its own process (progress writes to the real stderr, which runCli does not capture). */
function spawnCli(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli', 'bin.ts'), ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('convert --quiet / --verbose', () => {
  it('prints a summary of a few lines by default: the file, its type, tensors, size and seconds, not every tensor', async () => {
    const out = join(scratch.path, 'default.gguf');
    const run = await runCli('convert', TINY, '--type', 'q8_0', '--out', out, '--workers', '1');
    expect(run.code, run.stderr).toBe(0);
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines.length).toBeLessThanOrEqual(6);
    expect(lines[0]).toBe(`wrote      ${out}`);
    expect(run.stdout).toContain('file type  q8_0 (general.file_type 7), from an HF folder');
    expect(run.stdout).toMatch(/^tensors {4}28: /m);
    expect(run.stdout).toMatch(/^size {7}\d.* bits per weight\)$/m);
    expect(run.stdout).toMatch(/^time {7}\d+(\.\d)? s /m);
    expect(run.stdout).not.toContain('blk.0.attn_qkv.weight');
  });

  it('prints every tensor with --verbose, and with --dry-run', async () => {
    const verbose = await runCli('convert', TINY, '--type', 'q8_0', '--out', join(scratch.path, 'verbose.gguf'), '--workers', '1', '--verbose');
    expect(verbose.code, verbose.stderr).toBe(0);
    expect(verbose.stdout).toMatch(/gpt_neox\.layers\.0\.attention\.query_key_value\.weight\s+blk\.0\.attn_qkv\.weight\s+Q8_0/);
    const dry = await runCli('convert', TINY, '--type', 'q8_0', '--dry-run');
    expect(dry.stdout).toMatch(/blk\.0\.attn_qkv\.weight\s+Q8_0/);
    expect(dry.stdout).toContain('(dry run)');
  });

  it('prints nothing with --quiet, no progress either, and still writes the file', async () => {
    const out = join(scratch.path, 'quiet.gguf');
    const run = await spawnCli(['convert', TINY, '--type', 'q4_0', '--out', out, '--workers', '1', '--quiet']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe('');
    expect(existsSync(out)).toBe(true);
    const loud = await spawnCli(['convert', TINY, '--type', 'q4_0', '--out', join(scratch.path, 'loud.gguf'), '--workers', '1']);
    expect(loud.code, loud.stderr).toBe(0);
    expect(loud.stderr).toContain('converting');
  }, 60_000);

  it('prints errors with --quiet (exit 2), and refuses --quiet with --verbose', async () => {
    const bad = await runCli('convert', TINY, '--type', 'q4_z', '--quiet');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('"q4_z" is not a GGUF file type');
    const both = await runCli('convert', TINY, '--type', 'q4_0', '--quiet', '--verbose', '--dry-run');
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/quiet and verbose are mutually exclusive/);
  });

  it('prints the JSON plan with --json, even with --quiet', async () => {
    const run = await runCli('convert', TINY, '--type', 'q4_0', '--out', join(scratch.path, 'json.gguf'), '--workers', '1', '--quiet', '--json');
    expect(run.code, run.stderr).toBe(0);
    expect((JSON.parse(run.stdout) as { file_type: string }).file_type).toBe('q4_0');
  });

  it('summarises ONNX and WebGPU conversions the same way', async () => {
    const onnx = await runCli('convert', TINY, '--to', 'onnx', '--type', 'q4', '--out', join(scratch.path, 'onnx'), '--workers', '1');
    expect(onnx.code, onnx.stderr).toBe(0);
    expect(onnx.stdout).toMatch(/^q4 +onnx\/model_q4\.onnx, 39 initializers/m);
    expect(onnx.stdout).toMatch(/^time /m);
    expect(onnx.stdout).not.toContain('attention  plain');
    const webgpu = await runCli('convert', TINY, '--to', 'webgpu', '--type', 'q4f16_1', '--out', join(scratch.path, 'webgpu'), '--workers', '1');
    expect(webgpu.code, webgpu.stderr).toBe(0);
    expect(webgpu.stdout).toMatch(/^q4f16_1 +\.: 38 records in 1 shard\(s\)/m);
    expect(webgpu.stdout).not.toContain('params_shard_0.bin');
    const quiet = await runCli('convert', TINY, '--to', 'webgpu', '--type', 'q0f16', '--out', join(scratch.path, 'webgpu-quiet'), '--workers', '1', '--quiet');
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stdout + quiet.stderr).toBe('');
  });
});

describe.skipIf(!HAS_SHARED)('convert warnings on polyglot-ko-tiny', () => {
  it('says the U+0CF1 difference once, on stderr, in words a user can act on, citing no document', async () => {
    const run = await runCli('convert', POLYGLOT_TINY_DIR, '--type', 'q8_0', '--out', join(scratch.path, 'polyglot.gguf'), '--workers', '2');
    expect(run.code, run.stderr).toBe(0);
    const mentions = run.stderr.split('\n').filter((line) => line.includes('U+0CF1'));
    expect(mentions).toHaveLength(1);
    expect(mentions[0]).toMatch(/^warning: /);
    expect(mentions[0]).toContain('remove U+0CF1');
    expect(run.stdout).not.toContain('U+0CF1');
  });

  it('cites no document the user does not have in any warning', async () => {
    const plan = await convertToGguf(POLYGLOT_TINY_DIR, { type: 'q4_k_m', dryRun: true, tensorTypes: ['nothing=q8_0'] });
    expect(plan.warnings.length).toBeGreaterThanOrEqual(2);
    for (const warning of plan.warnings) expect(warning).not.toMatch(/specs\/|§|\.md\b|DESIGN/);
  });
});
