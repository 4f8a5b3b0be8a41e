import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dequantizeRows, GGML_TYPES, type GgmlTypeName, type KernelBackend, quantizeRows, setKernelBackend } from '../src/quant/index.js';
import {
  describeBlockMismatch,
  describeFloatMismatch,
  HAVE_GOLDEN,
  readGoldenBytes,
  readGoldenFloats,
  readGoldenManifest,
} from './helpers/quant-golden.js';

const GOLDEN_TYPES: readonly GgmlTypeName[] = [
  'F16',
  'BF16',
  'Q8_0',
  'Q4_0',
  'Q4_1',
  'Q5_0',
  'Q5_1',
  'Q2_K',
  'Q3_K',
  'Q4_K',
  'Q5_K',
  'Q6_K',
  'IQ4_NL',
  'IQ4_XS',
];

// Both kernel sets are held to ggml: the WebAssembly ports (the default) and the TypeScript reference.
describe.skipIf(!HAVE_GOLDEN).each(['wasm', 'js'] satisfies KernelBackend[])('ggml golden data (shared/golden/ggml), %s kernels', (backend) => {
  beforeAll(() => setKernelBackend(backend));
  afterAll(() => setKernelBackend('wasm'));

  const manifest = HAVE_GOLDEN ? readGoldenManifest() : undefined;
  const nPerRow = manifest?.input.n_per_row ?? 0;
  const input = HAVE_GOLDEN ? readGoldenFloats('input.f32') : new Float32Array(0);
  const importance = HAVE_GOLDEN ? readGoldenFloats('imatrix.f32') : new Float32Array(0);

  it('covers every golden type with our table', () => {
    expect(Object.keys(manifest?.types ?? {}).sort()).toEqual([...GOLDEN_TYPES].sort());
  });

  it('copies F32 rows bit for bit', () => {
    const bytes = quantizeRows('F32', input, nPerRow);
    expect(bytes).toEqual(new Uint8Array(input.buffer, input.byteOffset, input.byteLength));
    expect(dequantizeRows('F32', bytes, nPerRow)).toEqual(input);
  });

  for (const scheme of GOLDEN_TYPES) {
    const info = GGML_TYPES[scheme];
    const blocksPerRow = nPerRow / info.blockElements;
    for (const weighted of [false, true]) {
      const suffix = weighted ? '.imatrix' : '';
      const label = `${scheme}${weighted ? ' with importance weights' : ''}`;

      it(`quantizes ${label} byte-identically to ggml`, () => {
        const actual = quantizeRows(scheme, input, nPerRow, weighted ? { importance } : {});
        const message = describeBlockMismatch(label, actual, readGoldenBytes(`${scheme}${suffix}.bin`), info.blockBytes, blocksPerRow);
        expect(message, message ?? '').toBeNull();
      });

      it(`dequantizes ggml's ${label} blocks bit-identically to ggml`, () => {
        const actual = dequantizeRows(scheme, readGoldenBytes(`${scheme}${suffix}.bin`), nPerRow);
        const message = describeFloatMismatch(
          label,
          actual,
          readGoldenFloats(`${scheme}${suffix}.dequant.f32`),
          info.blockElements,
          blocksPerRow,
        );
        expect(message, message ?? '').toBeNull();
      });
    }
  }
});
