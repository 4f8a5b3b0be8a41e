import { describe, expect, it } from 'vitest';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';

describe('PolyquantError', () => {
  it('names the file and tensor in its message and maps bad input to exit code 2', () => {
    const error = new PolyquantError(ERROR_CODES.MALFORMED, 'bad offsets', { file: 'a.safetensors', tensor: 'w' });
    expect(error.message).toBe('a.safetensors: tensor "w": bad offsets');
    expect(error.exitCode).toBe(2);
  });
});
