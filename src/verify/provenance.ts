/**
 * Provenance for every JSON report (docs/schemas.md, "provenance"): which polyquant, Node and engines made
 * it, on what machine, from which command line, when, and how long each stage took. A reviewer reading a
 * report months later can tell whether two numbers are comparable (another llama.cpp build, another
 * thread count, another device) without the run's logs.
 *
 * Versions are read from the installed packages' own package.json files, found by module resolution from
 * this file (so a polyquant installed as a dependency reports its own version, not the version of the
 * project that installed it, which is what process.cwd() would find).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Engine } from './engine.js';
import { defaultMathThreads } from './engines/llamacpp.js';
import { nativeAddonBuild } from './engines/llamacpp-native.js';

/** This package's root: src/verify and dist/verify are both two levels below it. */
const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

function versionOf(manifest: unknown): string | null {
  const version = (manifest as { version?: unknown } | undefined)?.version;
  return typeof version === 'string' ? version : null;
}

let ownVersion: string | undefined;
/** polyquant's version, from the package.json next to this module's package root. */
export function polyquantVersion(): string {
  ownVersion ??= versionOf(readJson(join(PACKAGE_ROOT, 'package.json'))) ?? 'unknown';
  return ownVersion;
}

const requireHere = createRequire(import.meta.url);

/**
 * The folder of an installed package, found the way `import` would find it from here: its package.json
 * when the package exports it, else the entry point's folders walked up to the package.json naming it.
 */
function packageFolder(name: string): string | undefined {
  try {
    return dirname(requireHere.resolve(`${name}/package.json`));
  } catch {
    // An `exports` map without ./package.json: walk up from the entry point.
  }
  let folder: string;
  try {
    folder = dirname(requireHere.resolve(name));
  } catch {
    return undefined;
  }
  for (;;) {
    const manifest = readJson(join(folder, 'package.json')) as { name?: unknown } | undefined;
    if (manifest?.name === name) return folder;
    const parent = dirname(folder);
    if (parent === folder) return undefined;
    folder = parent;
  }
}

/** An installed package's version, or null when it is not installed. */
export function packageVersion(name: string): string | null {
  const folder = packageFolder(name);
  return folder === undefined ? null : versionOf(readJson(join(folder, 'package.json')));
}

/**
 * The llama.cpp node-llama-cpp ships: the release tag it was built from (llama/llama.cpp.info.json) and
 * the commit of the source bundle it carries (the first line after the header of llama/gitRelease.bundle,
 * `<sha> HEAD`), which is also what `scripts/build-native.mjs --from-source` builds.
 */
function llamaCppSource(folder: string): { release: string | null; commit: string | null } {
  const info = readJson(join(folder, 'llama', 'llama.cpp.info.json')) as { tag?: unknown; llamaCppGithubRepo?: unknown } | undefined;
  const release = typeof info?.tag === 'string' ? `${typeof info.llamaCppGithubRepo === 'string' ? `${info.llamaCppGithubRepo}@` : ''}${info.tag}` : null;
  let commit: string | null = null;
  try {
    // Only the bundle's text header is read (a few hundred bytes of a ~35 MB file).
    const header = readFileSync(join(folder, 'llama', 'gitRelease.bundle'), { encoding: 'latin1', flag: 'r' }).slice(0, 512);
    commit = /^[0-9a-f]{40}(?= )/m.exec(header)?.[0] ?? null;
  } catch {
    commit = null;
  }
  return { release, commit };
}

export interface EngineVersions {
  /** llamacpp engine: node-llama-cpp, the llama.cpp it ships, and which llama.cpp the native addon was linked to. */
  readonly node_llama_cpp?: {
    readonly version: string | null;
    readonly llama_cpp_release: string | null;
    readonly llama_cpp_commit: string | null;
    /** `node-llama-cpp`: its prebuilt libraries; `source`: llama.cpp built on this machine; null: no native addon. */
    readonly native_addon: string | null;
  };
  /** onnx engine. */
  readonly onnxruntime_node?: { readonly version: string | null };
  /** webgpu engine (Dawn for Node); the adapter is in each model's description. */
  readonly webgpu?: { readonly version: string | null };
  /** reference engine: polyquant's own TypeScript/WebAssembly forward pass (its version is polyquant's). */
  readonly reference?: { readonly version: string };
}

/** Versions of the engines named (a report lists only the engines that ran). */
export function engineVersions(engines: Iterable<string>): EngineVersions {
  const names = new Set(engines);
  const versions: { -readonly [K in keyof EngineVersions]: EngineVersions[K] } = {};
  if (names.has('llamacpp')) {
    const folder = packageFolder('node-llama-cpp');
    const source = folder === undefined ? { release: null, commit: null } : llamaCppSource(folder);
    versions.node_llama_cpp = {
      version: packageVersion('node-llama-cpp'),
      llama_cpp_release: source.release,
      llama_cpp_commit: source.commit,
      native_addon: nativeAddonBuild() ?? null,
    };
  }
  if (names.has('onnx')) versions.onnxruntime_node = { version: packageVersion('onnxruntime-node') };
  if (names.has('webgpu')) versions.webgpu = { version: packageVersion('webgpu') };
  if (names.has('reference')) versions.reference = { version: polyquantVersion() };
  return versions;
}

/**
 * The threads an engine computes with: its own `threads` when it reports one; the reference engine's worker
 * count; for llamacpp and onnx the count asked for, else their default (the machine's physical cores); null
 * for webgpu, whose parallelism is the adapter's.
 */
export function engineThreads(engine: Pick<Engine, 'name'>, requested: number | undefined): number | null {
  const own: unknown = (engine as Partial<{ threads: unknown }>).threads;
  if (typeof own === 'number') return own;
  if (engine.name === 'reference') {
    const parallelism: unknown = (engine as Partial<{ parallelism: unknown }>).parallelism;
    return typeof parallelism === 'number' ? parallelism : (requested ?? null);
  }
  if (engine.name === 'llamacpp' || engine.name === 'onnx') return requested ?? defaultMathThreads();
  return null;
}

/** One timed stage of a run. */
export interface StageTiming {
  /** `load`, `perplexity`, `kobest`, `convert`, … */
  readonly stage: string;
  /** What the stage worked on (a text file, a model role), when it names one. */
  readonly subject?: string;
  readonly seconds: number;
  /** Perplexity: positions scored by each model; tokens_per_s = scored_tokens / seconds (both models, wall time). */
  readonly scored_tokens?: number;
  readonly tokens_per_s?: number;
  /** KOBEST: documents scored by each model; documents_per_s likewise. */
  readonly documents?: number;
  readonly documents_per_s?: number;
}

export interface Provenance {
  readonly polyquant: string;
  readonly node: string;
  /** `linux x64 6.1.0-…`: process.platform, process.arch and the kernel release. */
  readonly platform: string;
  /** The first CPU's model name, and the CPUs this process may use. */
  readonly cpu: string | null;
  readonly cpus: number;
  /** The command line as the CLI received it (`polyquant verify …`), or null for a library call that passed none. */
  readonly command_line: readonly string[] | null;
  readonly started_at: string;
  readonly ended_at: string;
  readonly duration_s: number;
  /** Engines that ran, with versions (verify, demo). */
  readonly engines?: EngineVersions;
  /** Seconds per stage, in order. */
  readonly stages: readonly StageTiming[];
}

/** A run being timed: stages are added as they finish; `finish` gives the provenance block. */
export class RunClock {
  private readonly started = new Date();
  private readonly startedAt = performance.now();
  private readonly stages: StageTiming[] = [];

  constructor(private readonly commandLine: readonly string[] | undefined) {}

  /** Seconds since `from` (a performance.now() reading). */
  static since(from: number): number {
    return (performance.now() - from) / 1000;
  }

  /** Records a stage that began at `from` (performance.now()) and ends now. */
  stage(stage: string, from: number, extra: Omit<StageTiming, 'stage' | 'seconds'> = {}): StageTiming {
    const seconds = RunClock.since(from);
    const rate = (count: number | undefined): number | undefined => (count === undefined || !(seconds > 0) ? undefined : count / seconds);
    const tokensPerSecond = rate(extra.scored_tokens);
    const documentsPerSecond = rate(extra.documents);
    const timing: StageTiming = {
      stage,
      ...(extra.subject !== undefined && { subject: extra.subject }),
      seconds,
      ...(extra.scored_tokens !== undefined && { scored_tokens: extra.scored_tokens }),
      ...(tokensPerSecond !== undefined && { tokens_per_s: tokensPerSecond }),
      ...(extra.documents !== undefined && { documents: extra.documents }),
      ...(documentsPerSecond !== undefined && { documents_per_s: documentsPerSecond }),
    };
    this.stages.push(timing);
    return timing;
  }

  finish(engines?: Iterable<string>): Provenance {
    const ended = new Date();
    return {
      ...machineProvenance(this.commandLine),
      started_at: this.started.toISOString(),
      ended_at: ended.toISOString(),
      duration_s: RunClock.since(this.startedAt),
      ...(engines !== undefined && { engines: engineVersions(engines) }),
      stages: [...this.stages],
    };
  }
}

/** The parts of the provenance that do not depend on the run: versions, machine, command line. */
export function machineProvenance(commandLine: readonly string[] | undefined): Pick<Provenance, 'polyquant' | 'node' | 'platform' | 'cpu' | 'cpus' | 'command_line'> {
  return {
    polyquant: polyquantVersion(),
    node: process.version,
    platform: `${process.platform} ${process.arch} ${release()}`,
    cpu: cpus()[0]?.model.trim() ?? null,
    cpus: availableParallelism(),
    command_line: commandLine === undefined ? null : [...commandLine],
  };
}
