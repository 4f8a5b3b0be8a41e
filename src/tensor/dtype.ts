/**
 * The dtype table: every element type a checkpoint tensor can have, with its size and its name in each
 * source format. Everything else (byte math, safetensors/torch name lookups, CLI help) derives from it.
 * Sources: safetensors `Dtype` enum (safetensors/src/tensor.rs), torch storage class names
 * (torch/storage.py `_LegacyStorage` subclasses).
 */

export interface DTypeInfo {
  /** Our name, also the safetensors header spelling. */
  readonly name: DType;
  /** Bytes per element (BOOL is stored as one byte per element in both formats). */
  readonly bytes: number;
  /** torch legacy storage class that pickles this dtype (`torch.HalfStorage` …). */
  readonly torchStorage: string;
  /** Whether the values are floating point (and so can be widened to f32 for quantization). */
  readonly isFloat: boolean;
}

export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPES: Readonly<Record<DType, DTypeInfo>> = {
  F64: { name: 'F64', bytes: 8, torchStorage: 'DoubleStorage', isFloat: true },
  F32: { name: 'F32', bytes: 4, torchStorage: 'FloatStorage', isFloat: true },
  F16: { name: 'F16', bytes: 2, torchStorage: 'HalfStorage', isFloat: true },
  BF16: { name: 'BF16', bytes: 2, torchStorage: 'BFloat16Storage', isFloat: true },
  I64: { name: 'I64', bytes: 8, torchStorage: 'LongStorage', isFloat: false },
  I32: { name: 'I32', bytes: 4, torchStorage: 'IntStorage', isFloat: false },
  I16: { name: 'I16', bytes: 2, torchStorage: 'ShortStorage', isFloat: false },
  I8: { name: 'I8', bytes: 1, torchStorage: 'CharStorage', isFloat: false },
  U8: { name: 'U8', bytes: 1, torchStorage: 'ByteStorage', isFloat: false },
  BOOL: { name: 'BOOL', bytes: 1, torchStorage: 'BoolStorage', isFloat: false },
};

export const DTYPE_NAMES = Object.keys(DTYPES) as DType[];


export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.hasOwn(DTYPES, value);
}

/** Element count of a shape as a bigint, so that hostile shapes cannot overflow. */
export function elementCountBig(shape: readonly number[]): bigint {
  let count = 1n;
  for (const dim of shape) count *= BigInt(dim);
  return count;
}

export function elementCount(shape: readonly number[]): number {
  let count = 1;
  for (const dim of shape) count *= dim;
  return count;
}
