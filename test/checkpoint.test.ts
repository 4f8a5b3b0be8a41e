import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PolyquantError } from '../src/errors.js';
import { hashTensors } from '../src/inspect/hf.js';
import { parameterCount, readCheckpoint } from '../src/readers/checkpoint.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const scratch = tempDir();
afterAll(() => scratch.remove());

async function readError(path: string, options?: Parameters<typeof readCheckpoint>[1]): Promise<PolyquantError> {
  try {
    await readCheckpoint(path, options);
  } catch (error) {
    if (error instanceof PolyquantError) return error;
    throw error;
  }
  throw new Error('expected readCheckpoint to fail');
}

describe.skipIf(!HAS_SHARED)('the real-layout polyglot-ko-tiny checkpoint', () => {
  it('loads from the two safetensors shards by default, skipping the 12 buffers', async () => {
    const checkpoint = await readCheckpoint(POLYGLOT_TINY_DIR);
    expect(checkpoint.weights.format).toBe('safetensors');
    expect(checkpoint.weights.index).toMatch(/model\.safetensors\.index\.json$/);
    expect(checkpoint.weights.files.map((file) => file.path.split('/').at(-1))).toEqual([
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
    ]);
    expect(parameterCount(checkpoint)).toBe(18_560_512);
    expect(checkpoint.tensors.size).toBe(4 + 12 * 4);
    expect(checkpoint.skipped).toHaveLength(12);
    expect(checkpoint.skipped.filter((entry) => entry.reason === 'attention.bias').map((entry) => entry.tensor.shape)).toEqual(
      Array(4).fill([1, 1, 2048, 2048]),
    );
    expect(checkpoint.config).toMatchObject({ hiddenSize: 256, numLayers: 4, numHeads: 8, rotaryDims: 16, vocabSize: 30080 });
  });

  it('loads the same parameters, with the same bytes, from pytorch_model.bin', async () => {
    const fromSafetensors = await readCheckpoint(POLYGLOT_TINY_DIR, { weights: 'safetensors' });
    const fromBin = await readCheckpoint(POLYGLOT_TINY_DIR, { weights: 'bin' });
    expect(fromBin.weights.format).toBe('bin');
    expect(fromBin.skipped).toHaveLength(12);
    expect([...fromBin.tensors.keys()]).toEqual([...fromSafetensors.tensors.keys()]);
    const hashesA = await hashTensors([...fromSafetensors.tensors.values(), ...fromSafetensors.skipped.map((entry) => entry.tensor)]);
    const hashesB = await hashTensors([...fromBin.tensors.values(), ...fromBin.skipped.map((entry) => entry.tensor)]);
    const byName = (hashes: Map<{ name: string }, string>) => new Map([...hashes].map(([tensor, hash]) => [tensor.name, hash]));
    expect(byName(hashesB)).toEqual(byName(hashesA));
    expect(hashesA.size).toBe(64);
  });
});

describe('reading HF model folders', () => {
  it('prefers safetensors when a folder has both, and --weights chooses', async () => {
    const dir = await makeTinyModel(scratch.path, { format: 'both', shardBytes: 100_000 });
    expect((await readCheckpoint(dir)).weights.format).toBe('safetensors');
    expect((await readCheckpoint(dir)).weights.files.length).toBeGreaterThan(1);
    expect((await readCheckpoint(dir, { weights: 'bin' })).weights.format).toBe('bin');
  });

  it('reads sharded .bin weights through pytorch_model.bin.index.json', async () => {
    const dir = await makeTinyModel(scratch.path, { format: 'bin', binShardBytes: 100_000 });
    const checkpoint = await readCheckpoint(dir);
    expect(checkpoint.weights.index).toMatch(/pytorch_model\.bin\.index\.json$/);
    expect(checkpoint.weights.files.length).toBeGreaterThan(1);
    expect(checkpoint.skipped).toHaveLength(6);
  });

  it('gives identical parameter bytes for fp16 weights from safetensors and .bin', async () => {
    const dir = await makeTinyModel(scratch.path, { format: 'both' });
    const a = await readCheckpoint(dir, { weights: 'safetensors' });
    const b = await readCheckpoint(dir, { weights: 'bin' });
    for (const [name, tensor] of a.tensors) {
      expect(Buffer.from(await (b.tensors.get(name)?.read() ?? Promise.reject(new Error(name)))).equals(Buffer.from(await tensor.read()))).toBe(true);
    }
  });

  it('loads a tied-embedding checkpoint that has no embed_out.weight', async () => {
    const dir = await makeTinyModel(scratch.path, { configPatch: { tie_word_embeddings: true } });
    const checkpoint = await readCheckpoint(dir);
    expect(checkpoint.tensors.has('embed_out.weight')).toBe(false);
    expect(checkpoint.config.tieWordEmbeddings).toBe(true);
  });

  it('streams a tensor in row chunks that concatenate to the whole tensor', async () => {
    const dir = await makeTinyModel(scratch.path, { dtype: 'BF16' });
    const tensor = (await readCheckpoint(dir)).tensors.get('gpt_neox.embed_in.weight');
    if (tensor === undefined) throw new Error('missing embedding');
    const chunks: Uint8Array[] = [];
    for await (const chunk of tensor.rows(7)) chunks.push(chunk);
    expect(chunks).toHaveLength(Math.ceil(384 / 7));
    expect(chunks[0]?.length).toBe(7 * 64 * 2);
    expect(Buffer.concat(chunks).equals(Buffer.from(await tensor.read()))).toBe(true);
  });

  it('streams through one reused buffer when asked, with the same bytes', async () => {
    const dir = await makeTinyModel(scratch.path);
    const tensor = (await readCheckpoint(dir)).tensors.get('gpt_neox.layers.0.mlp.dense_h_to_4h.weight');
    if (tensor === undefined) throw new Error('missing tensor');
    const copies: Buffer[] = [];
    const buffers = new Set<ArrayBufferLike>();
    for await (const chunk of tensor.rows(10, { reuseBuffer: true })) {
      copies.push(Buffer.from(chunk));
      buffers.add(chunk.buffer);
    }
    expect(copies).toHaveLength(Math.ceil(256 / 10));
    expect(buffers.size).toBe(1);
    expect(Buffer.concat(copies).equals(Buffer.from(await tensor.read()))).toBe(true);
    // Two streams at once never share a buffer.
    const first = tensor.rows(10, { reuseBuffer: true })[Symbol.asyncIterator]();
    const second = tensor.rows(10, { reuseBuffer: true })[Symbol.asyncIterator]();
    const [a, b] = [await first.next(), await second.next()];
    expect(a.value.buffer).not.toBe(b.value.buffer);
    await first.return?.();
    await second.return?.();
  });

  it('fails with the folder named when there is no config.json', async () => {
    const dir = await makeTinyModel(scratch.path);
    rmSync(join(dir, 'config.json'));
    const error = await readError(dir);
    expect(error.code).toBe('not-found');
    expect(error.message).toContain(join(dir, 'config.json'));
  });

  it('fails naming the index and the shard when an index names a missing shard', async () => {
    const dir = await makeTinyModel(scratch.path, { shardBytes: 100_000 });
    rmSync(join(dir, 'model-00002-of-00004.safetensors'));
    const error = await readError(dir);
    expect(error.exitCode).toBe(2);
    expect(error.message).toContain('model.safetensors.index.json');
    expect(error.message).toContain('model-00002-of-00004.safetensors');
  });

  it('refuses an index whose shard name leaves the folder', async () => {
    const dir = await makeTinyModel(scratch.path, { shardBytes: 100_000 });
    const indexPath = join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(indexPath, 'utf8'));
    index.weight_map['gpt_neox.embed_in.weight'] = '../../etc/passwd';
    writeFileSync(indexPath, JSON.stringify(index));
    const error = await readError(dir);
    expect(error.code).toBe('malformed');
    expect(error.message).toContain('gpt_neox.embed_in.weight');
  });

  it('fails naming the tensor when a weight shape disagrees with config.json', async () => {
    const dir = await makeTinyModel(scratch.path);
    const configPath = join(dir, 'config.json');
    writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), intermediate_size: 512 }));
    const error = await readError(dir);
    expect(error.code).toBe('config');
    expect(error.message).toContain('gpt_neox.layers.0.mlp.dense_h_to_4h.weight');
    expect(error.message).toContain('[256, 64]');
    expect(error.message).toContain('[512, 64]');
  });

  it('fails when the tokenizer has more ids than the model has embedding rows', async () => {
    const dir = await makeTinyModel(scratch.path);
    const tokenizerPath = join(dir, 'tokenizer.json');
    const tokenizer = JSON.parse(readFileSync(tokenizerPath, 'utf8'));
    tokenizer.added_tokens.push({ id: 400, content: '<|extra|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    writeFileSync(tokenizerPath, JSON.stringify(tokenizer));
    const error = await readError(dir);
    expect(error.code).toBe('config');
    expect(error.message).toContain(tokenizerPath);
    expect(error.message).toContain('tokenizer.json has 401 token ids but config.json vocab_size is 384');
  });

  it('fails naming the architecture for a non-GPT-NeoX config', async () => {
    const dir = await makeTinyModel(scratch.path, { configPatch: {} });
    const configPath = join(dir, 'config.json');
    writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), architectures: ['GPT2LMHeadModel'] }));
    const error = await readError(dir);
    expect(error.code).toBe('unsupported');
    expect(error.message).toContain('GPT2LMHeadModel');
    expect(error.message).toContain('GPTNeoXForCausalLM');
  });
});
