/**
 * The sweep's grid: cells are format × type over the formats polyquant writes — GGUF file types, ONNX
 * types, WebGPU layouts — plus `simulate` cells (the reference engine on quantize → dequantized weights, no
 * file written) over GGUF types and WebGPU layouts. Every type list comes from its format's own table;
 * the presets only choose from them. Cells are always in one canonical order (formats as in
 * SWEEP_FORMATS, types in their table's order), whatever order the flags name them in, so that every
 * process of a sharded sweep sees the same grid and the same shard assignment.
 */
import { isOnnxTypeName, ONNX_TYPE_NAMES, ONNX_TYPES } from '../converters/onnx/types.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { GGML_TYPES } from '../quant/ggml-types.js';
import { isGptqGgmlType } from '../quant/gptq-ggml.js';
import { GGUF_FILE_TYPE_ALIASES, GGUF_FILE_TYPE_NAMES, GGUF_FILE_TYPES, type GgufFileType } from '../quant/policy.js';
import { WEBGPU_LAYOUT_NAMES, webGpuLayout } from '../quant/webgpu-layouts.js';

export const SWEEP_FORMATS = ['gguf', 'onnx', 'webgpu', 'simulate'] as const;
export type SweepFormat = (typeof SWEEP_FORMATS)[number];
/** The formats a sweep exports and verifies in their own engine (`simulate` writes no file). */
export const EXPORT_FORMATS: readonly SweepFormat[] = ['gguf', 'onnx', 'webgpu'];

/** Every type of each format, in its table's order. */
export const FORMAT_TYPES: Readonly<Record<SweepFormat, readonly string[]>> = {
  gguf: GGUF_FILE_TYPE_NAMES,
  onnx: ONNX_TYPE_NAMES,
  webgpu: WEBGPU_LAYOUT_NAMES,
  // verify --simulate: a GGUF type's llama-quantize mixture, or a WebGPU layout.
  simulate: [...GGUF_FILE_TYPE_NAMES, ...WEBGPU_LAYOUT_NAMES],
};

/**
 * Calibrated cells (`sweep --calibrate TEXT`): a type with a method suffix, `q4_k_m+imatrix`, `q4_k_m+gptq`,
 * `q4+gptq`, `q4f16_1+gptq`. `imatrix`: a GGUF file type quantized with the importance matrix of the
 * calibration text (as `convert --calibrate`); `gptq`: GPTQ error feedback with its Hessians (GGUF:
 * `convert --calibrate --optimize`; ONNX MatMulNBits and WebGPU group-quant: `convert --calibrate`).
 */
export const CALIBRATION_METHODS = ['imatrix', 'gptq'] as const;
export type CalibrationMethod = (typeof CALIBRATION_METHODS)[number];

/** GGUF file types whose own type's quantizer uses importance weights (not f16, not q8_0: the same bytes either way). */
const ggufTakesImportance = (type: GgufFileType): boolean => GGML_TYPES[GGUF_FILE_TYPES[type].defaultType].importance === 'used';

/** The calibration methods a type of a format takes, in CALIBRATION_METHODS order. */
export function calibrationMethods(format: SweepFormat, type: string): CalibrationMethod[] {
  switch (format) {
    case 'gguf': {
      if (!(GGUF_FILE_TYPE_NAMES as readonly string[]).includes(type)) return [];
      const own = GGUF_FILE_TYPES[type as GgufFileType].defaultType;
      // --optimize's GPTQ fills the types of gptq-ggml.ts (q8_0 included: GPTQ picks its levels).
      return [...(ggufTakesImportance(type as GgufFileType) ? (['imatrix'] as const) : []), ...(isGptqGgmlType(own) ? (['gptq'] as const) : [])];
    }
    case 'onnx': {
      // MatMulNBits weights (4-bit, and 8-bit in the converter's default --q8-format nbits).
      const linear = isOnnxTypeName(type) ? ONNX_TYPES[type].linear : undefined;
      return linear === 'nbits4' || linear === 'integer8' ? ['gptq'] : [];
    }
    case 'webgpu':
      return (WEBGPU_LAYOUT_NAMES as readonly string[]).includes(type) && webGpuLayout(type).kind === 'group-quant' ? ['gptq'] : [];
    case 'simulate':
      return [];
  }
}

/** A cell type split into its base type and calibration method (`q4_k_m+gptq` → q4_k_m, gptq). */
export function splitCellType(type: string): { readonly base: string; readonly method: CalibrationMethod | undefined } {
  const plus = type.indexOf('+');
  if (plus < 0) return { base: type, method: undefined };
  const method = type.slice(plus + 1);
  return { base: type.slice(0, plus), method: (CALIBRATION_METHODS as readonly string[]).includes(method) ? (method as CalibrationMethod) : undefined };
}

/** Every cell type of each format, each base type followed by its calibrated variants: the canonical order. */
const withCalibrated = (format: SweepFormat): string[] =>
  FORMAT_TYPES[format].flatMap((type) => [type, ...calibrationMethods(format, type).map((method) => `${type}+${method}`)]);
const GRID_TYPES: Readonly<Record<SweepFormat, readonly string[]>> = {
  gguf: withCalibrated('gguf'),
  onnx: withCalibrated('onnx'),
  webgpu: withCalibrated('webgpu'),
  simulate: FORMAT_TYPES.simulate,
};

export const SWEEP_PRESET_NAMES = ['quick', 'release'] as const;
export type SweepPresetName = (typeof SWEEP_PRESET_NAMES)[number];

/**
 * Types per preset. `quick`: the three GGUF types people ship most (q8_0, q4_k_m, q4_0) and every ONNX and
 * WebGPU type. `release`: a wider GGUF grid — f16, the legacy 8/5/4-bit types, the K-quant mixtures from
 * q6_k down to q2_k, and the 4-bit non-linear types — with the same ONNX and WebGPU types. `simulate`
 * cells take the preset's GGUF and WebGPU types.
 */
export const SWEEP_PRESETS: Readonly<Record<SweepPresetName, Readonly<Record<'gguf' | 'onnx' | 'webgpu', readonly string[]>>>> = {
  quick: { gguf: ['q8_0', 'q4_k_m', 'q4_0'], onnx: ONNX_TYPE_NAMES, webgpu: WEBGPU_LAYOUT_NAMES },
  release: {
    gguf: ['f16', 'q8_0', 'q6_k', 'q5_k_m', 'q5_k_s', 'q5_1', 'q5_0', 'q4_k_m', 'q4_k_s', 'q4_1', 'q4_0', 'iq4_xs', 'iq4_nl', 'q3_k_l', 'q3_k_m', 'q3_k_s', 'q2_k'],
    onnx: ONNX_TYPE_NAMES,
    webgpu: WEBGPU_LAYOUT_NAMES,
  },
};

export interface SweepCell {
  /** `<format>-<type>`: the cell file's name (cells/<id>.json). */
  readonly id: string;
  readonly format: SweepFormat;
  /** The format's type, with `+imatrix` / `+gptq` for a calibrated cell. */
  readonly type: string;
}

export interface GridOptions {
  /** Formats to sweep (default gguf, onnx and webgpu; with `simulate`, simulate alone). */
  readonly formats?: readonly string[] | undefined;
  /** Types, each `TYPE` (every chosen format that has it) or `FORMAT:TYPE`; overrides the preset. */
  readonly types?: readonly string[] | undefined;
  /** Default quick. */
  readonly preset?: string | undefined;
  /** Add simulate cells (alone when no formats are named). */
  readonly simulate?: boolean | undefined;
  /**
   * A calibration text is given: calibrated types may be named, and a preset grid gets every calibrated
   * variant of its types. Without it a calibrated type is refused.
   */
  readonly calibrate?: boolean | undefined;
}

export function cellId(format: SweepFormat, type: string): string {
  return `${format}-${type}`;
}

export function isSweepFormat(name: string): name is SweepFormat {
  return (SWEEP_FORMATS as readonly string[]).includes(name);
}

/** The cell an id names (`gguf-q4_k_m`), or undefined when it names none. */
export function parseCellId(id: string): SweepCell | undefined {
  const dash = id.indexOf('-');
  if (dash < 0) return undefined;
  const format = id.slice(0, dash);
  const type = id.slice(dash + 1);
  if (!isSweepFormat(format) || !GRID_TYPES[format].includes(type)) return undefined;
  return { id, format, type };
}

/** Sorts cell ids into the canonical grid order (unknown ids last, by name). */
export function gridOrder(ids: Iterable<string>): string[] {
  const rank = (id: string): number => {
    const cell = parseCellId(id);
    if (cell === undefined) return Number.MAX_SAFE_INTEGER;
    return SWEEP_FORMATS.indexOf(cell.format) * 1000 + GRID_TYPES[cell.format].indexOf(cell.type);
  };
  return [...new Set(ids)].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/** The grid the flags describe, in canonical order. Unknown formats, types and presets are USAGE errors (exit 2). */
export function planGrid(options: GridOptions = {}): SweepCell[] {
  const preset = (options.preset ?? 'quick').trim().toLowerCase();
  if (!(SWEEP_PRESET_NAMES as readonly string[]).includes(preset)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--preset ${JSON.stringify(options.preset)} is not one of ${SWEEP_PRESET_NAMES.join(', ')}`);
  }
  const formats = new Set<SweepFormat>();
  for (const raw of options.formats ?? []) {
    const name = raw.trim().toLowerCase();
    if (name === '') continue;
    if (!isSweepFormat(name)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `--formats: ${JSON.stringify(raw)} is not a format`, { hint: `formats are ${SWEEP_FORMATS.join(', ')}` });
    }
    formats.add(name);
  }
  if (options.simulate === true) formats.add('simulate');
  if (formats.size === 0) for (const format of EXPORT_FORMATS) formats.add(format);
  const chosen = SWEEP_FORMATS.filter((format) => formats.has(format));
  const wanted = new Map<SweepFormat, Set<string>>(chosen.map((format) => [format, new Set<string>()]));
  if (options.types === undefined || options.types.length === 0) {
    const table = SWEEP_PRESETS[preset as SweepPresetName];
    for (const format of chosen) {
      const types = format === 'simulate' ? [...table.gguf, ...table.webgpu] : table[format];
      for (const type of types) {
        wanted.get(format)?.add(type);
        if (options.calibrate === true) for (const method of calibrationMethods(format, type)) wanted.get(format)?.add(`${type}+${method}`);
      }
    }
  } else {
    for (const raw of options.types) {
      const entry = withoutAlias(raw.trim().toLowerCase());
      if (entry === '') continue;
      const colon = entry.indexOf(':');
      if (colon >= 0) {
        const format = entry.slice(0, colon);
        const type = withoutAlias(entry.slice(colon + 1));
        if (!isSweepFormat(format)) {
          throw new PolyquantError(ERROR_CODES.USAGE, `--types: ${JSON.stringify(raw)} names no format`, { hint: `formats are ${SWEEP_FORMATS.join(', ')}` });
        }
        checkCalibrated(raw, format, type, options.calibrate === true);
        if (!GRID_TYPES[format].includes(type)) {
          throw new PolyquantError(ERROR_CODES.USAGE, `--types: ${JSON.stringify(type)} is not a ${format} type`, { hint: `${format} types are ${FORMAT_TYPES[format].join(', ')}` });
        }
        if (!formats.has(format)) {
          throw new PolyquantError(ERROR_CODES.USAGE, `--types: ${JSON.stringify(raw)} names ${format}, which is not among the sweep's formats (${chosen.join(', ')})`, {
            hint: `add ${format} to --formats`,
          });
        }
        wanted.get(format)?.add(type);
        continue;
      }
      const owners = chosen.filter((format) => GRID_TYPES[format].includes(entry));
      if (owners.length === 0) {
        for (const format of chosen) checkCalibrated(raw, format, entry, options.calibrate === true);
        const elsewhere = SWEEP_FORMATS.filter((format) => GRID_TYPES[format].includes(entry));
        throw new PolyquantError(ERROR_CODES.USAGE, `--types: ${JSON.stringify(raw)} is not a type of ${chosen.join(', ')}`, {
          hint:
            elsewhere.length > 0
              ? `${entry} is a ${elsewhere.join('/')} type: add it to --formats`
              : chosen.map((format) => `${format}: ${FORMAT_TYPES[format].join(', ')}`).join('; '),
        });
      }
      for (const format of owners) {
        checkCalibrated(raw, format, entry, options.calibrate === true);
        wanted.get(format)?.add(entry);
      }
    }
  }
  const cells: SweepCell[] = [];
  for (const format of chosen) {
    for (const type of GRID_TYPES[format]) if (wanted.get(format)?.has(type)) cells.push({ id: cellId(format, type), format, type });
  }
  if (cells.length === 0) throw new PolyquantError(ERROR_CODES.USAGE, 'the grid has no cells', { hint: 'name types of the chosen formats with --types' });
  return cells;
}

export interface Shard {
  /** 0-based: 0 … count − 1 (as Kubernetes' JOB_COMPLETION_INDEX counts). */
  readonly index: number;
  readonly count: number;
}

/** `--shard I/N`: I from 0 to N − 1. */
export function parseShard(text: string): Shard {
  const match = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  const index = match === null ? Number.NaN : Number(match[1]);
  const count = match === null ? Number.NaN : Number(match[2]);
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(count) || count < 1 || index < 0 || index >= count) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--shard ${JSON.stringify(text)} is not I/N with 0 ≤ I < N`, { hint: 'e.g. --shard 0/3, --shard 1/3, --shard 2/3' });
  }
  return { index, count };
}

/**
 * The cells of one shard: cell k of the grid (0-based, canonical order) belongs to shard k mod N.
 * Round robin spreads each format's cells (and so their engines' costs) over the shards; the grid — and
 * so the assignment — is the same in every process given the same flags.
 */
export function shardCells(cells: readonly SweepCell[], shard: Shard | undefined): SweepCell[] {
  if (shard === undefined) return [...cells];
  return cells.filter((_, k) => k % shard.count === shard.index);
}

export function shardLabel(shard: Shard | undefined): string | null {
  return shard === undefined ? null : `${shard.index}/${shard.count}`;
}

/**
 * A calibrated type (`TYPE+METHOD`) named in --types: refused without --calibrate, and where the method
 * does not apply to the format's type (USAGE, exit 2). Plain types pass.
 */
function checkCalibrated(raw: string, format: SweepFormat, type: string, calibrate: boolean): void {
  if (!type.includes('+')) return;
  const { base, method } = splitCellType(type);
  if (method === undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--types: ${JSON.stringify(raw)} names no calibration method`, { hint: `methods are ${CALIBRATION_METHODS.join(', ')} (e.g. q4_k_m+gptq)` });
  }
  if (!FORMAT_TYPES[format].includes(base)) return;
  const methods = calibrationMethods(format, base);
  if (!methods.includes(method)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--types: ${JSON.stringify(raw)}: ${format} ${base} cannot be calibrated with ${method}`, {
      hint: methods.length > 0 ? `${format} ${base} takes ${methods.map((m) => `+${m}`).join(', ')}` : `${format} ${base} takes no calibration`,
    });
  }
  if (!calibrate) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--types: ${JSON.stringify(raw)} is a calibrated cell and needs calibration text`, { hint: 'add --calibrate TEXT (e.g. a training split)' });
  }
}

/** llama-quantize's aliases (`q4_k` = q4_k_m; quant/policy.ts), which name no type of another format; a method suffix stays. */
function withoutAlias(type: string): string {
  const { base } = splitCellType(type);
  const suffix = type.slice(base.length);
  return Object.hasOwn(GGUF_FILE_TYPE_ALIASES, base) ? `${GGUF_FILE_TYPE_ALIASES[base] as string}${suffix}` : type;
}
