/**
 * `polyquant serve`'s HTTP side: what it serves (the page, the manifest and the shards it names, config
 * and tokenizer files) and what it refuses (anything else in the folder, paths outside it, methods other
 * than GET/HEAD), and the folder checks made before it listens. The page itself, in Chromium, is
 * test/webgpu-browser.test.ts.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningServer, serve } from '../src/serve/serve.js';
import { runCli } from './helpers/cli.js';
import { expectPolyquantError } from './helpers/errors.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-serve-');
afterAll(() => scratch.remove());

/** A folder shaped like a WebGPU folder (the server checks names and sizes, not tensors). */
function fakeFolder(shards: { name: string; bytes: number; write?: number }[]): string {
  const folder = scratch.fresh();
  writeFileSync(
    join(folder, 'tensor-cache.json'),
    JSON.stringify({ metadata: {}, records: shards.map((shard) => ({ dataPath: shard.name, format: 'raw-shard', nbytes: shard.bytes, records: [] })) }),
  );
  for (const shard of shards) writeFileSync(join(folder, shard.name), new Uint8Array(shard.write ?? shard.bytes).fill(7));
  writeFileSync(join(folder, 'mlc-chat-config.json'), '{"model_type":"gpt_neox"}');
  writeFileSync(join(folder, 'tokenizer.json'), '{}');
  writeFileSync(join(folder, 'secret.txt'), 'not for the browser');
  return folder;
}

function pageDir(): string {
  const dir = scratch.fresh();
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>t</title>');
  writeFileSync(join(dir, 'app.js'), 'export {};');
  return dir;
}

interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

/** A raw request (the path is sent as given, unnormalised, as a hostile client would). */
function get(server: RunningServer, path: string, method = 'GET'): Promise<Reply> {
  return new Promise((done, fail) => {
    const req = request({ host: '127.0.0.1', port: server.port, path, method }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => done({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', fail);
    req.end();
  });
}

describe('polyquant serve', () => {
  let server: RunningServer;
  let folder: string;
  beforeAll(async () => {
    folder = fakeFolder([
      { name: 'params_shard_0.bin', bytes: 1024 },
      { name: 'params_shard_1.bin', bytes: 40 },
    ]);
    server = await serve(folder, { port: 0, pageDir: pageDir() });
  });
  afterAll(async () => server?.close());

  it('serves the page, the manifest, the shards it names, the config and the tokenizer — and lists exactly those', async () => {
    expect(server.url).toBe(`http://127.0.0.1:${server.port}/`);
    expect(server.paths).toEqual([
      '/',
      '/app.js',
      '/index.html',
      '/model/mlc-chat-config.json',
      '/model/params_shard_0.bin',
      '/model/params_shard_1.bin',
      '/model/tensor-cache.json',
      '/model/tokenizer.json',
    ]);
    const page = await get(server, '/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect((await get(server, '/app.js')).headers['content-type']).toBe('text/javascript; charset=utf-8');
    const shard = await get(server, '/model/params_shard_0.bin');
    expect(shard.status).toBe(200);
    expect(shard.headers['content-type']).toBe('application/octet-stream');
    expect(shard.headers['content-length']).toBe('1024');
    expect(shard.headers['cache-control']).toBe('no-store');
    expect(shard.body.equals(Buffer.alloc(1024, 7))).toBe(true);
    const head = await get(server, '/model/params_shard_1.bin', 'HEAD');
    expect([head.status, head.headers['content-length'], head.body.length]).toEqual([200, '40', 0]);
  });

  it('serves nothing else: other files of the folder, paths that climb out of it, encoded or not, other methods', async () => {
    for (const path of ['/model/secret.txt', '/model/../secret.txt', '/model/%2e%2e/secret.txt', '/../../etc/passwd', '/model/', '/model/params_shard_2.bin', '/%00']) {
      expect([path, (await get(server, path)).status]).toEqual([path, 404]);
    }
    expect((await get(server, '/%E0%A4%A')).status).toBe(400);
    const post = await get(server, '/model/tensor-cache.json', 'POST');
    expect([post.status, post.headers.allow]).toEqual([405, 'GET, HEAD']);
  });

  it('refuses a folder that is not a WebGPU folder, a missing or short shard, an unsafe shard name and an unbuilt page, before listening', async () => {
    await expectPolyquantError(serve(scratch.fresh(), { pageDir: pageDir() }), 'not-found', 'no tensor-cache.json');
    await expectPolyquantError(serve(join(scratch.path, 'absent'), { pageDir: pageDir() }), 'not-found', 'does not exist');
    const missing = fakeFolder([{ name: 'params_shard_0.bin', bytes: 8 }]);
    writeFileSync(join(missing, 'tensor-cache.json'), JSON.stringify({ records: [{ dataPath: 'params_shard_9.bin', nbytes: 8, records: [] }] }));
    await expectPolyquantError(serve(missing, { pageDir: pageDir() }), 'not-found', 'params_shard_9.bin');
    const short = fakeFolder([{ name: 'params_shard_0.bin', bytes: 64, write: 60 }]);
    await expectPolyquantError(serve(short, { pageDir: pageDir() }), 'malformed', 'has 60 bytes', 'says 64');
    const climbing = fakeFolder([]);
    writeFileSync(join(climbing, 'tensor-cache.json'), JSON.stringify({ records: [{ dataPath: '../secret.txt', nbytes: 1, records: [] }] }));
    await expectPolyquantError(serve(climbing, { pageDir: pageDir() }), 'malformed', 'not a plain file name');
    const emptyPage = scratch.fresh();
    mkdirSync(join(emptyPage, 'sub'));
    await expectPolyquantError(serve(folder, { pageDir: emptyPage }), 'not-found', 'npm run build');
    await expectPolyquantError(serve(folder, { pageDir: pageDir(), port: 70000 }), 'usage', '--port 70000');
  });

  it('reports a port in use as a usage error naming the port', async () => {
    await expectPolyquantError(serve(folder, { pageDir: pageDir(), port: server.port }), 'usage', `127.0.0.1:${server.port}`);
  });

  it('exits 2 from the command line for a folder that is not a WebGPU folder, and for a bad --port', async () => {
    const notWebGpu = await runCli('serve', scratch.fresh());
    expect(notWebGpu.code).toBe(2);
    expect(notWebGpu.stderr).toContain('tensor-cache.json');
    const badPort = await runCli('serve', folder, '--port', 'abc');
    expect(badPort.code).toBe(2);
    expect(badPort.stderr).toContain('--port');
  });
});
