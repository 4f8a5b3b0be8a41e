/**
 * GPT-NeoX tensor names and layout in GGUF (specs/gguf.md §2.3–§2.4, §5.1):
 * - the HF → GGUF name table: gguf-py/gguf/constants.py `MODEL_TENSORS[MODEL_ARCH.GPTNEOX]` and
 *   tensor_mapping.py, with the names of src/llama-arch.cpp `LLM_TENSOR_NAMES`;
 * - the fused-QKV row reorder of conversion/gptneox.py `GPTNeoXModel.modify_tensors` (HF interleaves the
 *   projection per head as [n_head, 3, head_dim]; llama.cpp's build_qkv wants [Q; K; V]) and its inverse;
 * - the order llama-quantize writes tensors in (src/llama-model-loader.h `weight_name_comparer`).
 */
import type { NeoXTensorRole } from '../../arch/gpt-neox.js';
import { ERROR_CODES, PolyquantError } from '../../errors.js';

/** GGUF name per GPT-NeoX tensor role; `{layer}` is the block index. */
export const GGUF_TENSOR_NAMES: Readonly<Record<NeoXTensorRole, string>> = {
  'token-embedding': 'token_embd.weight',
  'output-head': 'output.weight',
  'final-norm-weight': 'output_norm.weight',
  'final-norm-bias': 'output_norm.bias',
  'attn-norm-weight': 'blk.{layer}.attn_norm.weight',
  'attn-norm-bias': 'blk.{layer}.attn_norm.bias',
  'qkv-weight': 'blk.{layer}.attn_qkv.weight',
  'qkv-bias': 'blk.{layer}.attn_qkv.bias',
  'attn-output-weight': 'blk.{layer}.attn_output.weight',
  'attn-output-bias': 'blk.{layer}.attn_output.bias',
  'ffn-norm-weight': 'blk.{layer}.ffn_norm.weight',
  'ffn-norm-bias': 'blk.{layer}.ffn_norm.bias',
  'ffn-up-weight': 'blk.{layer}.ffn_up.weight',
  'ffn-up-bias': 'blk.{layer}.ffn_up.bias',
  'ffn-down-weight': 'blk.{layer}.ffn_down.weight',
  'ffn-down-bias': 'blk.{layer}.ffn_down.bias',
};

/** The GGUF name of a tensor role (in block `layer`, for per-layer roles). */
export function ggufTensorName(role: NeoXTensorRole, layer: number | null): string {
  const pattern = GGUF_TENSOR_NAMES[role];
  return pattern.includes('{layer}') ? pattern.replace('{layer}', String(layer ?? 0)) : pattern;
}

/** The inverse table: GGUF name pattern → role. */
const ROLE_BY_GGUF_PATTERN: ReadonlyMap<string, NeoXTensorRole> = new Map(
  (Object.entries(GGUF_TENSOR_NAMES) as [NeoXTensorRole, string][]).map(([role, pattern]) => [pattern, role]),
);

/** The role and block of a GGUF tensor name, or undefined for a name GPT-NeoX does not have. */
export function roleOfGgufName(name: string): { role: NeoXTensorRole; layer: number | null } | undefined {
  const block = /^blk\.(\d+)\.(.+)$/.exec(name);
  const pattern = block === null ? name : `blk.{layer}.${block[2]}`;
  const role = ROLE_BY_GGUF_PATTERN.get(pattern);
  if (role === undefined) return undefined;
  return { role, layer: block === null ? null : Number(block[1]) };
}

/** GGUF `ne` is the PyTorch shape reversed: ne[0] is the contiguous row (gguf_writer.py `add_tensor_info`). */
export function ggufShape(hfShape: readonly number[]): number[] {
  return hfShape.length === 0 ? [1] : [...hfShape].reverse();
}

/** The block a GGUF tensor belongs to, as `sscanf(name, "blk.%d.")` reads it; -1 for whole-model tensors. */
function blockOf(name: string): number {
  const match = /^blk\.(\d+)\./.exec(name);
  return match === null ? -1 : Number(match[1]);
}

/**
 * llama-quantize's tensor order (`weight_name_comparer`, src/llama-model-loader.h): by block number, with
 * whole-model tensors (-1) first, then by name as std::string compares (bytewise; our names are ASCII).
 */
export function compareLlamaQuantizeOrder(a: string, b: string): number {
  const blockA = blockOf(a);
  const blockB = blockOf(b);
  if (blockA !== blockB) return blockA - blockB;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The fused QKV projection has 3·n_embd output rows. HF orders them per head, [head][q|k|v][dim];
 * GGUF wants [q|k|v][head][dim] (conversion/gptneox.py reshapes to (n_head, 3, head_dim, n_embd) and
 * concatenates [:, 0], [:, 1], [:, 2]). `gguf_row[t·n_embd + h·head_dim + d] = hf_row[h·3·head_dim + t·head_dim + d]`.
 */
export interface QkvLayout {
  readonly numHeads: number;
  readonly headDim: number;
}

/** The HF row that GGUF row `ggufRow` of the fused QKV comes from. */
export function qkvSourceRow(ggufRow: number, layout: QkvLayout): number {
  const { numHeads, headDim } = layout;
  const hidden = numHeads * headDim;
  const part = Math.floor(ggufRow / hidden);
  const head = Math.floor((ggufRow % hidden) / headDim);
  return (head * 3 + part) * headDim + (ggufRow % headDim);
}

/** The GGUF row that HF row `hfRow` of the fused QKV goes to (the inverse of qkvSourceRow). */
export function qkvTargetRow(hfRow: number, layout: QkvLayout): number {
  const { numHeads, headDim } = layout;
  const head = Math.floor(hfRow / (3 * headDim));
  const part = Math.floor((hfRow % (3 * headDim)) / headDim);
  return part * numHeads * headDim + head * headDim + (hfRow % headDim);
}

/**
 * The fused QKV moves in blocks of head_dim consecutive rows: GGUF block j = part·n_head + head comes
 * from HF block head·3 + part. The streaming converter reads these blocks, never a whole tensor.
 */
export function qkvSourceBlock(ggufBlock: number, layout: QkvLayout): number {
  const part = Math.floor(ggufBlock / layout.numHeads);
  const head = ggufBlock % layout.numHeads;
  return head * 3 + part;
}

interface RowArray {
  readonly length: number;
  set(source: ArrayLike<number>, offset?: number): void;
  subarray(begin?: number, end?: number): ArrayLike<number>;
}

function moveRows<T extends RowArray>(
  data: T,
  rowLength: number,
  layout: QkvLayout,
  out: T,
  sourceOf: (row: number, layout: QkvLayout) => number,
): T {
  const rows = 3 * layout.numHeads * layout.headDim;
  if (data.length !== rows * rowLength || out.length !== data.length) {
    throw new PolyquantError(ERROR_CODES.USAGE, `fused QKV data of ${data.length} values is not ${rows} rows of ${rowLength}`);
  }
  for (let row = 0; row < rows; row += 1) {
    const from = sourceOf(row, layout) * rowLength;
    out.set(data.subarray(from, from + rowLength), row * rowLength);
  }
  return out;
}

/** HF [head][q|k|v][dim] rows → GGUF [q|k|v][head][dim] rows (weight: rowLength = n_embd; bias: 1). */
export function reorderQkvRows<T extends RowArray>(data: T, rowLength: number, layout: QkvLayout, out: T): T {
  return moveRows(data, rowLength, layout, out, qkvSourceRow);
}

/** GGUF [q|k|v][head][dim] rows → HF [head][q|k|v][dim] rows: the inverse of reorderQkvRows. */
export function restoreQkvRows<T extends RowArray>(data: T, rowLength: number, layout: QkvLayout, out: T): T {
  return moveRows(data, rowLength, layout, out, qkvTargetRow);
}
