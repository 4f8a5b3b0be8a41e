import { describe, expect, it } from 'vitest';
import { fallbackType, type GgufFileType, tensorTypeFor, useMoreBits } from '../src/quant/policy.js';

/** polyglot-ko-3.8b's GGUF tensors (ne order) as the converter names them. */
const E = 3072;
const F = 12288;
const V = 30080;
const model = { numLayers: 32, tiedEmbeddings: false, imatrix: false };
const type = (fileType: GgufFileType, name: string, ne: number[]) => tensorTypeFor(fileType, { name, ne }, model);
const qkvTypes = (fileType: GgufFileType) => Array.from({ length: 32 }, (_, layer) => type(fileType, `blk.${layer}.attn_qkv.weight`, [E, 3 * E]));
const downTypes = (fileType: GgufFileType) => Array.from({ length: 32 }, (_, layer) => type(fileType, `blk.${layer}.ffn_down.weight`, [F, E]));

describe('llama-quantize tensor types for polyglot-ko-3.8b (specs/gguf.md §5.3)', () => {
  const moreBits = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31];

  it('marks layers 0-3, 6, 9, …, 27, 28-31 for more bits', () => {
    expect(Array.from({ length: 32 }, (_, i) => i).filter((i) => useMoreBits(i, 32))).toEqual(moreBits);
    expect([0, 1, 2, 3].filter((i) => useMoreBits(i, 4))).toEqual([2, 3]);
  });

  it('gives q4_k_m its mixture', () => {
    expect(type('q4_k_m', 'token_embd.weight', [E, V])).toBe('Q4_K');
    expect(type('q4_k_m', 'output.weight', [E, V])).toBe('Q6_K');
    expect(type('q4_k_m', 'blk.5.attn_output.weight', [E, E])).toBe('Q4_K');
    expect(type('q4_k_m', 'blk.5.ffn_up.weight', [E, F])).toBe('Q4_K');
    const expected = Array.from({ length: 32 }, (_, i) => (moreBits.includes(i) ? 'Q6_K' : 'Q4_K'));
    expect(qkvTypes('q4_k_m')).toEqual(expected);
    expect(downTypes('q4_k_m')).toEqual(expected);
  });

  it('gives q5_k_m, q4_k_s, q4_0, q8_0, q6_k and f16 their mixtures', () => {
    expect(qkvTypes('q5_k_m')).toEqual(Array.from({ length: 32 }, (_, i) => (moreBits.includes(i) ? 'Q6_K' : 'Q5_K')));
    expect(type('q5_k_m', 'output.weight', [E, V])).toBe('Q6_K');
    expect(qkvTypes('q4_k_s')).toEqual(Array.from({ length: 32 }, (_, i) => (i < 4 ? 'Q5_K' : 'Q4_K')));
    expect(downTypes('q4_k_s')).toEqual(Array.from({ length: 32 }, (_, i) => (i < 4 ? 'Q5_K' : 'Q4_K')));
    expect(type('q4_0', 'output.weight', [E, V])).toBe('Q6_K');
    expect(new Set([...qkvTypes('q4_0'), ...downTypes('q4_0'), type('q4_0', 'token_embd.weight', [E, V])])).toEqual(new Set(['Q4_0']));
    expect(type('q8_0', 'output.weight', [E, V])).toBe('Q8_0');
    expect(type('q6_k', 'output.weight', [E, V])).toBe('Q6_K');
    expect(type('f16', 'blk.0.attn_qkv.weight', [E, 3 * E])).toBe('F16');
  });

  it('leaves norms, biases and 1-D tensors unquantized', () => {
    expect(type('q4_k_m', 'blk.0.attn_norm.weight', [E])).toBeUndefined();
    expect(type('q4_k_m', 'blk.0.attn_qkv.bias', [3 * E])).toBeUndefined();
    expect(type('q4_k_m', 'output_norm.weight', [E])).toBeUndefined();
  });

  it('uses the q3_k and q2_k rules', () => {
    expect(qkvTypes('q3_k_m').slice(0, 3)).toEqual(['Q5_K', 'Q5_K', 'Q4_K']);
    expect(downTypes('q3_k_m').slice(0, 3)).toEqual(['Q5_K', 'Q5_K', 'Q4_K']);
    expect(type('q3_k_m', 'blk.9.attn_output.weight', [E, E])).toBe('Q4_K');
    expect(type('q3_k_l', 'blk.9.attn_output.weight', [E, E])).toBe('Q5_K');
    expect(type('q3_k_s', 'blk.9.ffn_down.weight', [F, E])).toBe('Q3_K');
    expect(type('q2_k', 'blk.9.attn_qkv.weight', [E, 3 * E])).toBe('Q3_K');
    expect(type('q2_k', 'blk.9.ffn_up.weight', [E, F])).toBe('Q2_K');
  });

  it('bumps the first eighth of ffn_down for iq4 without an imatrix, and q4_0 to q4_1 with one', () => {
    expect(downTypes('iq4_xs').slice(0, 5)).toEqual(['Q5_K', 'Q5_K', 'Q5_K', 'Q5_K', 'IQ4_XS']);
    const withImatrix = tensorTypeFor('q4_0', { name: 'blk.1.ffn_down.weight', ne: [F, E] }, { ...model, imatrix: true });
    expect(withImatrix).toBe('Q4_1');
  });

  it('falls back when a row length is not a multiple of the block size, as tensor_type_fallback does', () => {
    expect(fallbackType('Q4_K', 2080)).toBe('Q5_0');
    expect(fallbackType('Q5_K', 2080)).toBe('Q5_1');
    expect(fallbackType('Q6_K', 2080)).toBe('Q8_0');
    expect(fallbackType('IQ4_XS', 2080)).toBe('IQ4_NL');
    expect(fallbackType('Q4_K', 100)).toBe('F16');
    expect(tensorTypeFor('q4_k_m', { name: 'output.weight', ne: [2080, 100] }, model)).toBe('Q8_0');
  });

  it('treats token_embd as the output head when embeddings are tied', () => {
    expect(tensorTypeFor('q4_k_m', { name: 'token_embd.weight', ne: [E, V] }, { ...model, tiedEmbeddings: true })).toBe('Q6_K');
  });
});
