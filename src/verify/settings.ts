/**
 * `verify`'s settings and inputs, checked before any model is loaded: a setting that cannot mean anything
 * (0 windows, a limit of 0 documents, a context of 1 token, an unknown --simulate type) and an input that
 * is missing (a text, a KOBEST task's split) are refused at once with exit 2, instead of after hours of
 * evaluation or as a NaN in the report. Messages name the flag.
 */
import type { VerifyOptions } from './verify.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { withFile } from '../io/file.js';
import { type KobestInputs, loadKobestInputs } from './kobest/index.js';
import { PERPLEXITY_PROTOCOLS } from './perplexity.js';
import { simulationScheme } from './simulate.js';

/** The longest window any engine takes (both engines' MAX_CONTEXT_LENGTH). */
const MAX_CTX = 1 << 16;

/** The settings checked before any model loads: a view of verify's options. */
export type VerifySettings = Pick<
  VerifyOptions,
  'pplFiles' | 'ctx' | 'protocol' | 'stride' | 'maxWindows' | 'kobestDir' | 'tasks' | 'shots' | 'split' | 'limit' | 'simulate'
>;

function integer(flag: string, value: number | undefined, min: number, max: number): void {
  if (value === undefined) return;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${flag} ${value} is not an integer from ${min}${max === Number.MAX_SAFE_INTEGER ? ' up' : ` to ${max}`}`);
  }
}

/**
 * Checks every setting and input of a verify run; returns the KOBEST splits, loaded and checked, when
 * the run has KOBEST (so that the two models' runs need not load them again).
 */
export async function checkVerifySettings(options: VerifySettings): Promise<KobestInputs | undefined> {
  const protocol = options.protocol ?? 'windows';
  if (!(PERPLEXITY_PROTOCOLS as readonly string[]).includes(protocol)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--protocol ${JSON.stringify(protocol)} is not one of ${PERPLEXITY_PROTOCOLS.join(', ')}`);
  }
  integer('--ctx', options.ctx, protocol === 'llamacpp' ? 3 : 2, MAX_CTX);
  integer('--stride', options.stride, 1, options.ctx ?? MAX_CTX);
  if (options.stride !== undefined && protocol !== 'strided') {
    throw new PolyquantError(ERROR_CODES.USAGE, `--stride applies only to --protocol strided, not ${protocol}`);
  }
  integer('--max-windows', options.maxWindows, 1, Number.MAX_SAFE_INTEGER);
  if (options.simulate !== undefined) simulationScheme(options.simulate);
  // Each text must be a readable regular file now, not after the models are loaded.
  for (const file of options.pplFiles ?? []) await withFile(file, async () => undefined);
  if (options.kobestDir === undefined) {
    if (options.limit !== undefined || options.tasks !== undefined) {
      throw new PolyquantError(ERROR_CODES.USAGE, `${options.limit !== undefined ? '--limit' : '--tasks'} applies to KOBEST, and no --kobest folder is given`);
    }
    return undefined;
  }
  return loadKobestInputs({
    dir: options.kobestDir,
    ...(options.tasks !== undefined && { tasks: options.tasks }),
    ...(options.shots !== undefined && { shots: options.shots }),
    ...(options.split !== undefined && { split: options.split }),
    ...(options.limit !== undefined && { limit: options.limit }),
  });
}
