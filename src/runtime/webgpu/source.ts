/**
 * Where a model's files come from. The runtime never opens a file itself: Node passes an fs-backed source
 * (verify/engines/webgpu.ts), the browser page a fetch-backed one (`fetchWeightSource` below). Names are
 * the folder's own file names (`tensor-cache.json`, `params_shard_0.bin`, …), never paths.
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';

export interface WeightSource {
  /** A JSON file of the folder, parsed (`tensor-cache.json`, `mlc-chat-config.json`). */
  readJson(name: string): Promise<unknown>;
  /**
   * A whole file's bytes (a shard). A missing file must reject with a PolyquantError of code `not-found`
   * naming it; anything else that is not a PolyquantError is reported by the loader as an I/O failure.
   */
  readBytes(name: string): Promise<Uint8Array>;
  /** How to name a file in messages (a path or a URL); default: the name. */
  describe?(name: string): string;
}

export interface FetchWeightSourceOptions {
  /** The fetch to use (default: globalThis.fetch). */
  readonly fetch?: typeof fetch;
  /** Passed to every request (cache mode, credentials, an AbortSignal, …). */
  readonly init?: RequestInit;
}

/**
 * A WeightSource over HTTP: `base` is the folder's URL (`http://127.0.0.1:8080/model/` or a relative
 * `./model/`, resolved against the page's location); each file is fetched as `base + name`. A 404 is a
 * `not-found` error naming the URL; another status an `io` error.
 */
export function fetchWeightSource(base: string | URL, options: FetchWeightSourceOptions = {}): WeightSource {
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  // A relative base resolves against the page (browsers); Node needs an absolute URL.
  const page = (globalThis as { location?: { href: string } }).location?.href;
  const root = page !== undefined ? new URL(base, page) : new URL(base);
  if (!root.pathname.endsWith('/')) root.pathname += '/';
  const url = (name: string): string => new URL(encodeURIComponent(name), root).href;
  const get = async (name: string): Promise<Response> => {
    let response: Response;
    try {
      response = await fetchImpl(url(name), options.init);
    } catch (error) {
      throw new PolyquantError(ERROR_CODES.IO, `fetching failed: ${error instanceof Error ? error.message : String(error)}`, { file: url(name), cause: error });
    }
    if (response.status === 404) throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'the server has no such file (HTTP 404)', { file: url(name) });
    if (!response.ok) throw new PolyquantError(ERROR_CODES.IO, `the server answered HTTP ${response.status} ${response.statusText}`, { file: url(name) });
    return response;
  };
  return {
    async readJson(name) {
      const response = await get(name);
      try {
        return (await response.json()) as unknown;
      } catch (error) {
        throw new PolyquantError(ERROR_CODES.MALFORMED, `not valid JSON: ${error instanceof Error ? error.message : String(error)}`, { file: url(name), cause: error });
      }
    },
    async readBytes(name) {
      const response = await get(name);
      return new Uint8Array(await response.arrayBuffer());
    },
    describe: url,
  };
}
