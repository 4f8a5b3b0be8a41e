/**
 * The JSON shape of every report polyquant writes (docs/schemas.md): one naming convention, snake_case, as
 * llama.cpp and lm-evaluation-harness write theirs. The library's TypeScript objects keep their camelCase
 * fields; reports are mapped here, at the boundary, rather than renamed throughout the code.
 *
 * Keys that are camelCase identifiers (`bitsPerWeight`) become snake_case (`bits_per_weight`); every other
 * key is data and stays as it is: tensor names, GGUF keys (`general.architecture`), type names (`Q4_K`),
 * lm-eval metric keys (`acc,none`). Subtrees under an `opaque` key are copied unchanged (metadata read
 * from a model file, a copy of a config file). bigint becomes a decimal string, typed arrays plain arrays.
 */

/** Keys whose values are other programs' data, copied as they were read. */
export const OPAQUE_JSON_KEYS: ReadonlySet<string> = new Set(['metadata', 'model_config', 'modelConfig']);

const CAMEL_IDENTIFIER = /^[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)+$/;

/** `bitsPerWeight` → `bits_per_weight`; a key that is not a camelCase identifier is returned as is. */
export function snakeCaseKey(key: string): string {
  return CAMEL_IDENTIFIER.test(key) ? key.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`) : key;
}

/** The value with camelCase identifier keys in snake_case, recursively (module header). */
export function toJsonShape(value: unknown, opaque: ReadonlySet<string> = OPAQUE_JSON_KEYS): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value === null || typeof value !== 'object') return value;
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) return Array.from(value as unknown as ArrayLike<number>, (item) => toJsonShape(item, opaque));
  if (Array.isArray(value)) return value.map((item) => toJsonShape(item, opaque));
  if (value instanceof Map) return toJsonShape(Object.fromEntries(value), opaque);
  const json = (value as { toJSON?: unknown }).toJSON;
  if (typeof json === 'function') return toJsonShape(json.call(value), opaque);
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    if (item === undefined || typeof item === 'function') continue;
    const name = snakeCaseKey(key);
    out[name] = opaque.has(key) || opaque.has(name) ? plainJson(item) : toJsonShape(item, opaque);
  }
  return out;
}

/** An opaque subtree as JSON would write it (bigint as a string), keys untouched. */
function plainJson(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (_key, item: unknown) => (typeof item === 'bigint' ? item.toString() : item)) ?? 'null') as unknown;
}

/** The report as JSON text in its documented shape, two-space indented, with a final newline. */
export function jsonReportText(value: unknown): string {
  return `${JSON.stringify(toJsonShape(value), null, 2)}\n`;
}
