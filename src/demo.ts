/**
 * `polyquant demo`: the whole pipeline on small models in well under a minute. Each model (the bundled
 * fixtures/tiny-neox, and ../shared/fixtures/polyglot-ko-tiny next to a checkout when present) is
 * converted to GGUF f16 and q4_k_m and to ONNX q4, and each output is verified against its Hugging Face
 * folder: the baseline runs in the reference engine, the GGUF in llama.cpp (node-llama-cpp), the ONNX
 * model in onnxruntime-node, all scoring the same token windows of a Korean text — perplexity, KL
 * divergence and top-1 agreement, gated by thresholds.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { convertToGguf } from './converters/gguf/convert.js';
import { convertToOnnx } from './converters/onnx/convert.js';
import { isOnnxTypeName, ONNX_TYPE_NAMES, type OnnxTypeName } from './converters/onnx/types.js';
import { ERROR_CODES, PolyquantError } from './errors.js';
import { checkOutputFolder } from './io/output.js';
import { removeStaleTemps, trackTemp } from './io/temp.js';
import { type GgufFileType, isGgufFileType } from './quant/policy.js';
import { readCheckpoint } from './readers/checkpoint.js';
import { readTextFile } from './verify/text.js';
import type { VerifyReport } from './verify/report.js';
import type { Thresholds } from './verify/thresholds.js';
import { verify } from './verify/verify.js';

export const DEMO_SCHEMA = 'polyquant.demo/2';

/** The package root (src/ or dist/ → one level up). */
const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const BUNDLED_MODEL = join(PACKAGE_ROOT, 'fixtures', 'tiny-neox');
const SHARED_DIR = join(PACKAGE_ROOT, '..', 'shared');
const SHARED_MODEL = join(SHARED_DIR, 'fixtures', 'polyglot-ko-tiny');
const SHARED_TEXT = join(SHARED_DIR, 'data', 'korean-text', 'valid.txt');

export const DEMO_TYPES: readonly GgufFileType[] = ['f16', 'q4_k_m'];
export const DEMO_ONNX_TYPES: readonly OnnxTypeName[] = ['q4'];

/** The demo's scratch folder in the OS temp folder: `polyquant-demo-<pid>-XXXXXX` (the pid tells a stale one). */
export const DEMO_SCRATCH_PREFIX = 'polyquant-demo-';
const DEMO_SCRATCH_PATTERN = /^polyquant-demo-(\d+)-[A-Za-z0-9]{6}$/;

/**
 * Gates per file type. f16 must be indistinguishable from the baseline (the GGUF issue's acceptance:
 * ΔPPL ≤ 0.5 %, top-1 ≥ 99 %); the quantized mixes get the loose limits a release gate for a 4-bit model
 * might start from. Other types use the q4_k_m gate.
 */
export const DEMO_THRESHOLDS: Readonly<Record<string, Thresholds>> = {
  f32: { maxPplIncreasePct: 0.5, minTop1: 0.99 },
  f16: { maxPplIncreasePct: 0.5, minTop1: 0.99 },
  bf16: { maxPplIncreasePct: 1, minTop1: 0.98 },
  q8_0: { maxPplIncreasePct: 1, minTop1: 0.97 },
  'onnx:fp32': { maxPplIncreasePct: 0.5, minTop1: 0.99 },
  'onnx:fp16': { maxPplIncreasePct: 0.5, minTop1: 0.99 },
  'onnx:q8': { maxPplIncreasePct: 1, minTop1: 0.97 },
  default: { maxPplIncreasePct: 10, maxKld: 0.1, minTop1: 0.8 },
};

/**
 * A Korean text of our own for perplexity when ../shared is absent (a fresh clone): everyday prose about
 * converting and checking language models, enough for several 128-token windows of the bundled model.
 */
const SAMPLE_TEXT = `오늘은 아침부터 비가 내렸다. 우산을 챙겨 집을 나섰지만 바람이 세서 옷이 조금 젖었다. 회사에 도착하니 동료들이 따뜻한 차를 준비해 두었다.
우리 팀은 한국어 언어 모델을 작은 기기에서도 빠르게 돌리는 방법을 연구한다. 모델의 가중치를 16비트나 8비트, 4비트로 줄이면 메모리를 크게 아낄 수 있다.
하지만 숫자를 줄이면 정확도가 떨어질 수 있으므로, 변환한 모델이 원래 모델과 얼마나 비슷하게 답하는지 반드시 확인해야 한다.
그래서 같은 문장을 두 모델에 넣고 다음 단어의 확률을 비교한다. 두 분포가 가까우면 쿨백-라이블러 발산이 작고, 가장 높은 확률의 단어도 대부분 같다.
점심시간에는 근처 식당에서 김치찌개와 된장찌개를 나눠 먹었다. 식사 후에는 공원을 한 바퀴 걸으며 다음 실험 계획을 이야기했다.
오후에는 새로 변환한 모델로 문장 생성 시험을 했다. 서울의 날씨, 역사 속 인물, 요리법 같은 다양한 주제로 질문을 던지고 대답을 기록했다.
결과를 표로 정리해 보니 16비트 모델은 원래 모델과 거의 같았고, 4비트 모델은 조금 달랐지만 여전히 쓸 만했다.
저녁에는 비가 그치고 하늘이 맑아졌다. 퇴근길에 서점에 들러 소설책 한 권을 샀다. 집에 돌아와 가족과 함께 저녁을 먹고 하루를 마무리했다.
내일은 더 큰 모델을 변환하고, 한국어 이해 평가 문제로 정확도를 측정할 예정이다. 좋은 도구는 반복되는 일을 줄이고 실수를 막아 준다.
`;

export interface DemoOptions {
  /** HF model folders; default the bundled tiny model and ../shared's polyglot-ko-tiny when present. */
  readonly models?: readonly string[] | undefined;
  /** GGUF types to convert to (default f16 and q4_k_m). */
  readonly types?: readonly string[] | undefined;
  /** ONNX types to convert to (default q4), in one ONNX folder per model. */
  readonly onnxTypes?: readonly string[] | undefined;
  /** Keep the GGUF files in this folder (default: a temporary folder, removed at the end). */
  readonly outDir?: string | undefined;
  /** UTF-8 text for perplexity (default ../shared's korean-text/valid.txt, else a built-in sample). */
  readonly text?: string | undefined;
  /** Token window; default min(128, the model's context). */
  readonly ctx?: number | undefined;
  /** Windows scored per text (default 2). */
  readonly maxWindows?: number | undefined;
  readonly device?: 'auto' | 'cpu' | 'gpu' | undefined;
  /** Quantizer and engine threads. */
  readonly threads?: number | undefined;
  readonly onProgress?: ((message: string) => void) | undefined;
}

export interface DemoRow {
  readonly model: string;
  readonly format: 'gguf' | 'onnx';
  readonly type: string;
  readonly file: string;
  readonly fileBytes: number;
  readonly convertSeconds: number;
  readonly verifySeconds: number;
  readonly engine: string;
  readonly device: string;
  readonly baselinePpl: number;
  readonly candidatePpl: number;
  readonly deltaPplPct: number;
  readonly kldMean: number | null;
  readonly top1: number;
  readonly verdict: 'pass' | 'fail';
  readonly failed: readonly string[];
}

export interface DemoResult {
  readonly schema: typeof DEMO_SCHEMA;
  /** The perplexity text's path, or `built-in Korean sample`. */
  readonly text: string;
  readonly rows: readonly DemoRow[];
  readonly reports: readonly VerifyReport[];
  readonly verdict: 'pass' | 'fail';
  /** Where the GGUF files are, when kept. */
  readonly outDir: string | undefined;
}

export function defaultDemoModels(): string[] {
  return [BUNDLED_MODEL, ...(existsSync(join(SHARED_MODEL, 'config.json')) ? [SHARED_MODEL] : [])];
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const models = (options.models ?? defaultDemoModels()).map((model) => resolve(model));
  const types = (options.types ?? DEMO_TYPES).map((type) => type.toLowerCase());
  for (const type of types) {
    if (!isGgufFileType(type)) throw new PolyquantError(ERROR_CODES.USAGE, `unknown GGUF type ${JSON.stringify(type)}`, { hint: 'see polyquant convert --help' });
  }
  const onnxTypes = (options.onnxTypes ?? DEMO_ONNX_TYPES).map((type) => type.toLowerCase());
  for (const type of onnxTypes) {
    if (!isOnnxTypeName(type)) throw new PolyquantError(ERROR_CODES.USAGE, `unknown ONNX type ${JSON.stringify(type)}`, { hint: `ONNX types are ${ONNX_TYPE_NAMES.join(', ')}` });
  }
  const say = options.onProgress ?? (() => undefined);
  // Scratch folders of demos that were killed before they could clean up: ours by name, process gone.
  await removeStaleTemps(tmpdir(), DEMO_SCRATCH_PATTERN);
  // Every input is checked before the first conversion starts: a missing model or text fails at once.
  for (const model of models) await readCheckpoint(model);
  if (options.text !== undefined) await readTextFile(options.text);
  const keptDir = options.outDir === undefined ? undefined : await checkOutputFolder(options.outDir, '--out');
  const scratch = await mkdtemp(join(tmpdir(), `${DEMO_SCRATCH_PREFIX}${process.pid}-`));
  const untrack = trackTemp(scratch);
  const outDir = keptDir ?? scratch;
  try {
    await mkdir(outDir, { recursive: true });
    let text = options.text === undefined ? undefined : resolve(options.text);
    if (text === undefined && existsSync(SHARED_TEXT)) text = SHARED_TEXT;
    let textLabel = text;
    if (text === undefined) {
      text = join(scratch, 'sample-ko.txt');
      await writeFile(text, SAMPLE_TEXT);
      textLabel = 'built-in Korean sample';
    }
    const rows: DemoRow[] = [];
    const reports: VerifyReport[] = [];
    const verifyOne = async (model: string, format: DemoRow['format'], type: string, candidate: string, onnxType?: OnnxTypeName): Promise<{ report: VerifyReport; seconds: number }> => {
      say(`verifying ${basename(candidate)}${onnxType === undefined ? '' : ` (${onnxType})`} against ${basename(model)}`);
      const started = performance.now();
      const report = await verify({
        candidate,
        baseline: model,
        pplFiles: [text as string],
        ctx: options.ctx ?? 128,
        maxWindows: options.maxWindows ?? 2,
        kld: true,
        engine: 'auto',
        device: options.device ?? 'auto',
        ...(onnxType !== undefined && { onnxType }),
        ...(options.threads !== undefined && { threads: options.threads }),
        thresholds: DEMO_THRESHOLDS[format === 'onnx' ? `onnx:${type}` : type] ?? DEMO_THRESHOLDS['default'] ?? {},
      });
      return { report, seconds: (performance.now() - started) / 1000 };
    };
    const addRow = (model: string, format: DemoRow['format'], type: string, file: string, fileBytes: number, convertSeconds: number, verifySeconds: number, report: VerifyReport): void => {
      reports.push(report);
      const section = report.perplexity[0];
      if (section === undefined) throw new Error('verify returned no perplexity section');
      rows.push({
        model,
        format,
        type,
        file: options.outDir === undefined ? basename(file) : file,
        fileBytes,
        convertSeconds,
        verifySeconds,
        engine: report.candidate.engine,
        device: report.candidate.device,
        baselinePpl: section.baseline.ppl,
        candidatePpl: section.candidate.ppl,
        deltaPplPct: section.comparison.delta_ppl_pct,
        kldMean: section.comparison.kld?.mean ?? null,
        top1: section.comparison.top1_agreement,
        verdict: report.verdict,
        failed: report.checks.filter((check) => !check.passed).map((check) => `${check.metric} ${check.value} (limit ${check.limit})`),
      });
    };
    for (const model of models) {
      for (const type of types) {
        const file = join(outDir, `${basename(model)}-${type}.gguf`);
        say(`converting ${basename(model)} → ${basename(file)}`);
        const started = performance.now();
        await convertToGguf(model, { type, out: file, ...(options.threads !== undefined && { workers: options.threads }) });
        const convertSeconds = (performance.now() - started) / 1000;
        const { report, seconds } = await verifyOne(model, 'gguf', type, file);
        addRow(model, 'gguf', type, file, (await stat(file)).size, convertSeconds, seconds, report);
      }
      if (onnxTypes.length > 0) {
        const folder = join(outDir, `${basename(model)}-onnx`);
        say(`converting ${basename(model)} → ${basename(folder)} (${onnxTypes.join(', ')})`);
        const started = performance.now();
        const plan = await convertToOnnx(model, { types: onnxTypes, out: folder, force: true, ...(options.threads !== undefined && { workers: options.threads }) });
        const convertSeconds = (performance.now() - started) / 1000;
        for (const planned of plan.models) {
          const { report, seconds } = await verifyOne(model, 'onnx', planned.type, folder, planned.type);
          const bytes = planned.dataFiles.reduce((sum, data) => sum + data.bytes, 0) + (await stat(join(folder, planned.file))).size;
          addRow(model, 'onnx', planned.type, join(folder, planned.file), bytes, convertSeconds / plan.models.length, seconds, report);
        }
      }
    }
    return {
      schema: DEMO_SCHEMA,
      text: textLabel ?? text,
      rows,
      reports,
      verdict: rows.every((row) => row.verdict === 'pass') ? 'pass' : 'fail',
      outDir: options.outDir === undefined ? undefined : outDir,
    };
  } finally {
    await rm(scratch, { recursive: true, force: true });
    untrack();
  }
}
