import { expect } from 'vitest';
import { type ErrorCode, PolyquantError } from '../../src/errors.js';

/** Awaits `work`, expects it to reject with a PolyquantError of `code` whose message has every fragment. */
export async function expectPolyquantError(work: Promise<unknown>, code: ErrorCode, ...fragments: string[]): Promise<PolyquantError> {
  const error = await work.then(
    () => new Error('expected the promise to reject'),
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(PolyquantError);
  const polyquant = error as PolyquantError;
  expect(polyquant.code, polyquant.message).toBe(code);
  for (const fragment of fragments) expect(polyquant.message).toContain(fragment);
  return polyquant;
}
