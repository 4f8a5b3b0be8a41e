/**
 * `polyquant serve DIR`: a small static HTTP server for the WebGPU browser page. It serves
 *
 * - the page itself (`/` → index.html, `/app.js` → the bundled page script: src/page/main.ts and the WGSL
 *   runtime, built by scripts/build-page.mjs into dist/page/), and
 * - the WebGPU folder under `/model/`: exactly the files the page may read — the manifests, the shards the
 *   manifest names, mlc-chat-config.json and the tokenizer files. Nothing else in the folder, nothing
 *   outside it (no path is ever joined from the request: the request is looked up in that list).
 *
 * GET and HEAD only; it listens on 127.0.0.1 unless told otherwise (a browser treats localhost as a secure
 * context, which WebGPU requires). Shards are streamed from disk, never held in memory. The folder's
 * manifest is read and checked once at start: a missing shard or a shard of the wrong size is a typed
 * error before the server listens.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { pathExists } from '../io/file.js';
import { readJsonFile } from '../readers/json-file.js';
import { TOKENIZER_FILE_NAMES } from '../readers/tokenizer.js';

/** The manifest every WebGPU folder has, and the older name WebLLM builds read (specs/webgpu.md §1.1). */
const MANIFEST_NAMES = ['tensor-cache.json', 'ndarray-cache.json', 'tensor-cache-b16.json'] as const;
const FOLDER_FILES = ['mlc-chat-config.json', ...Object.values(TOKENIZER_FILE_NAMES)] as const;

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.bin': 'application/octet-stream',
  '.png': 'image/png',
};

/** The folder the bundled page lives in: dist/page next to dist/serve (the compiled layout). */
export function defaultPageDir(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', 'page');
}

export interface ServeOptions {
  /** 0 (default) picks a free port. */
  readonly port?: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Where index.html and app.js are (default: defaultPageDir()). */
  readonly pageDir?: string;
}

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  /** The request paths served, sorted (for the CLI's summary and for tests). */
  readonly paths: readonly string[];
  close(): Promise<void>;
}

/** Lists what `/model/…` serves: the folder's manifest(s), the shards they name, config and tokenizer files. */
async function modelFiles(folder: string): Promise<Map<string, string>> {
  const manifestFile = join(folder, MANIFEST_NAMES[0]);
  if (!(await pathExists(manifestFile))) {
    throw new PolyquantError(ERROR_CODES.NOT_FOUND, `not a WebGPU folder: it has no ${MANIFEST_NAMES[0]}`, {
      file: folder,
      hint: 'serve a folder written by polyquant convert --to webgpu',
    });
  }
  const files = new Map<string, string>();
  for (const name of [...MANIFEST_NAMES, ...FOLDER_FILES]) {
    const path = join(folder, name);
    if ((await stat(path).catch(() => undefined))?.isFile() === true) files.set(name, path);
  }
  const manifest = await readJsonFile(manifestFile);
  const shards = isObject(manifest) && Array.isArray(manifest['records']) ? manifest['records'] : undefined;
  if (shards === undefined) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, `${MANIFEST_NAMES[0]} has no "records" array of shards`, { file: manifestFile });
  }
  for (const [index, shard] of shards.entries()) {
    const dataPath = isObject(shard) ? shard['dataPath'] : undefined;
    const nbytes = isObject(shard) ? shard['nbytes'] : undefined;
    // The page fetches `/model/<dataPath>`: only plain file names, as MLC writes them.
    if (typeof dataPath !== 'string' || !/^[\w.-]+$/.test(dataPath) || dataPath.startsWith('.')) {
      throw new PolyquantError(ERROR_CODES.MALFORMED, `shard ${index}: dataPath ${JSON.stringify(dataPath)} is not a plain file name`, { file: manifestFile });
    }
    const path = join(folder, dataPath);
    const info = await stat(path).catch(() => undefined);
    if (info?.isFile() !== true) {
      throw new PolyquantError(ERROR_CODES.NOT_FOUND, `shard ${dataPath} named by ${MANIFEST_NAMES[0]} does not exist`, { file: path });
    }
    if (typeof nbytes === 'number' && info.size !== nbytes) {
      throw new PolyquantError(ERROR_CODES.MALFORMED, `shard ${dataPath} has ${info.size} bytes; ${MANIFEST_NAMES[0]} says ${nbytes}`, {
        file: path,
        hint: 'the shard is truncated or from another conversion',
      });
    }
    files.set(dataPath, path);
  }
  return files;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function pageFiles(pageDir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const [route, name] of [
    ['', 'index.html'],
    ['index.html', 'index.html'],
    ['app.js', 'app.js'],
    ['app.js.map', 'app.js.map'],
  ] as const) {
    const path = join(pageDir, name);
    if (await pathExists(path)) files.set(route, path);
  }
  if (!files.has('') || !files.has('app.js')) {
    throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'the browser page is not built (no index.html and app.js)', {
      file: pageDir,
      hint: 'run npm run build (it bundles src/page into dist/page)',
    });
  }
  return files;
}

function contentType(path: string): string {
  const dot = path.lastIndexOf('.');
  return CONTENT_TYPES[dot < 0 ? '' : path.slice(dot)] ?? 'application/octet-stream';
}

/** Starts serving `folder` (a WebGPU folder) and the page. */
export async function serve(folder: string, options: ServeOptions = {}): Promise<RunningServer> {
  const root = resolve(folder);
  const info = await stat(root).catch(() => undefined);
  if (info?.isDirectory() !== true) {
    throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'the folder to serve does not exist', { file: root });
  }
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--port ${port} is not an integer from 0 to 65535`);
  }
  const host = options.host ?? '127.0.0.1';
  const routes = new Map<string, string>();
  const model = await modelFiles(root);
  for (const [route, path] of await pageFiles(resolve(options.pageDir ?? defaultPageDir()))) routes.set(`/${route}`, path);
  for (const [name, path] of model) routes.set(`/model/${name}`, path);

  const server = createServer((request, response) => {
    handle(routes, request, response).catch((error: unknown) => {
      if (!response.headersSent) response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      response.end(error instanceof Error ? error.message : String(error));
    });
  });
  await listen(server, port, host);
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${shownHost}:${address.port}/`,
    port: address.port,
    paths: [...routes.keys()].sort(),
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((done, fail) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      fail(
        new PolyquantError(error.code === 'EADDRINUSE' ? ERROR_CODES.USAGE : ERROR_CODES.IO, `cannot listen on ${host}:${port}: ${error.message}`, {
          cause: error,
          ...(error.code === 'EADDRINUSE' && { hint: 'choose another --port, or 0 for any free port' }),
        }),
      );
    });
    server.listen(port, host, () => done());
  });
}

async function handle(routes: ReadonlyMap<string, string>, request: IncomingMessage, response: ServerResponse): Promise<void> {
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.writeHead(405, { allow: 'GET, HEAD' }).end();
    return;
  }
  let path: string;
  try {
    path = decodeURIComponent(new URL(request.url ?? '/', 'http://localhost').pathname);
  } catch {
    response.writeHead(400).end();
    return;
  }
  const file = routes.get(path);
  if (file === undefined) {
    response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end(`not served: ${path}\n`);
    return;
  }
  const info = await stat(file);
  response.writeHead(200, {
    'content-type': contentType(basename(file)),
    'content-length': String(info.size),
    // The page and the model change between conversions; a browser cache would show an old one.
    'cache-control': 'no-store',
  });
  if (request.method === 'HEAD') {
    response.end();
    return;
  }
  await new Promise<void>((done, fail) => {
    const stream = createReadStream(file);
    stream.once('error', fail);
    response.once('close', () => {
      stream.destroy();
      done();
    });
    stream.pipe(response);
  });
}
