/// <reference types="@webgpu/types" />
/**
 * WebGPU in Node: Dawn through the npm `webgpu` package (0.6.2), imported lazily so that commands that never
 * run the WebGPU runtime never load its 21 MB native module (specs/webgpu.md §5).
 *
 * - Software adapters: Debian's `chromium` ships SwiftShader's Vulkan ICD; when it is installed and
 *   VK_ADD_DRIVER_FILES is unset, we set it to that ICD before Dawn starts. The variable *adds* to the
 *   Vulkan loader's driver list (VK_ICD_FILENAMES would replace it), so a real GPU's ICD stays visible.
 * - Lifetime: the `create()` instance must stay reachable while any of its devices lives — when V8
 *   collected it, processes aborted at random ("futex facility returned an unexpected error code", §5.2) —
 *   and a live instance keeps Node from exiting. One instance serves the process; each opened device holds a
 *   reference, and the last release drops it from globalThis.
 * - Adapter choice: `gpu` takes a hardware adapter (not a fallback adapter, not SwiftShader/llvmpipe) and
 *   fails with UNSUPPORTED where there is none; `cpu` takes a software adapter; `auto` a hardware one if any,
 *   else a software one. The returned description says which, for verify's report.
 */
import { existsSync } from 'node:fs';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { isSoftwareAdapterInfo } from '../../runtime/webgpu/gpu.js';
import { probeGpuHardware } from './gpu-probe.js';

export type WebGpuDeviceChoice = 'auto' | 'cpu' | 'gpu';

/** Where distributions install SwiftShader's Vulkan ICD (Debian/Ubuntu chromium). */
const SWIFTSHADER_ICDS = ['/usr/lib/chromium/vk_swiftshader_icd.json', '/usr/lib/chromium-browser/vk_swiftshader_icd.json'];

export interface DawnDevice {
  readonly device: GPUDevice;
  readonly adapterInfo: GPUAdapterInfo;
  /** Whether the adapter is a CPU implementation (SwiftShader, lavapipe) or a fallback adapter. */
  readonly software: boolean;
  /** For reports: "software adapter (SwiftShader driver 5.0.0)" or the GPU's description. */
  readonly description: string;
  /** Destroys the device and drops this device's hold on the Dawn instance. */
  release(): void;
}

export interface OpenDawnOptions {
  readonly device?: WebGpuDeviceChoice;
  /** Limits to request beyond the defaults (each capped at what the adapter offers). Default: the adapter's maxBufferSize and maxStorageBufferBindingSize. */
  readonly requiredLimits?: Readonly<Record<string, number>>;
}

type DawnModule = { create(options: string[]): GPU; globals: Record<string, unknown> };

const HOLD = Symbol.for('polyquant.webgpu.instance');
let loading: Promise<DawnModule> | undefined;
let instance: GPU | undefined;
let holders = 0;

function loadDawn(): Promise<DawnModule> {
  loading ??= (async () => {
    if (process.env['VK_ADD_DRIVER_FILES'] === undefined) {
      const icd = SWIFTSHADER_ICDS.find((path) => existsSync(path));
      if (icd !== undefined) process.env['VK_ADD_DRIVER_FILES'] = icd;
    }
    try {
      const module = (await import('webgpu')) as unknown as DawnModule & { default?: DawnModule };
      const dawn = module.create !== undefined ? module : (module.default as DawnModule);
      // GPUBufferUsage, GPUMapMode, … as the browser has them (the runtime uses these globals).
      for (const [key, value] of Object.entries(dawn.globals)) {
        if (!(key in globalThis)) Object.defineProperty(globalThis, key, { value, configurable: true, writable: true });
      }
      return dawn;
    } catch (error) {
      loading = undefined;
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the webgpu package (Dawn for Node) could not be loaded: ${error instanceof Error ? error.message : String(error)}`, {
        hint: 'the webgpu engine needs the npm package webgpu and its prebuilt dawn.node for this platform',
        cause: error,
      });
    }
  })();
  return loading;
}

function acquireInstance(dawn: DawnModule): GPU {
  if (instance === undefined) {
    instance = dawn.create([]);
    (globalThis as Record<symbol, unknown>)[HOLD] = instance;
  }
  holders += 1;
  return instance;
}

function releaseInstance(): void {
  holders -= 1;
  if (holders === 0) {
    delete (globalThis as Record<symbol, unknown>)[HOLD];
    instance = undefined;
  }
}

function describeAdapter(info: GPUAdapterInfo, software: boolean): string {
  const name = info.description || [info.vendor, info.architecture, info.device].filter((part) => part !== '').join(' ') || 'unknown adapter';
  return software ? `software adapter (${name})` : name;
}

/** The adapters Dawn offers, hardware first when there is one. */
async function adapters(gpu: GPU): Promise<GPUAdapter[]> {
  const found: GPUAdapter[] = [];
  const high = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (high !== null) found.push(high);
  if (high === null || isSoftwareAdapterInfo(high.info)) {
    const fallback = await gpu.requestAdapter({ forceFallbackAdapter: true });
    if (fallback !== null && (high === null || fallback.info.description !== high.info.description)) found.push(fallback);
  }
  return found;
}

/** Opens a GPUDevice on the adapter `options.device` asks for (see the module comment). */
export async function openDawnDevice(options: OpenDawnOptions = {}): Promise<DawnDevice> {
  const choice = options.device ?? 'auto';
  if (choice !== 'auto' && choice !== 'cpu' && choice !== 'gpu') {
    throw new PolyquantError(ERROR_CODES.USAGE, `device is ${JSON.stringify(choice)}; expected auto, cpu or gpu`);
  }
  // No GPU device node (gpu-probe.ts): Dawn could only offer software adapters; fail before loading it.
  const hardware = choice === 'gpu' ? probeGpuHardware() : undefined;
  if (hardware?.present === false) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `--device gpu: the webgpu engine found no hardware WebGPU adapter: ${hardware.summary}`, {
      hint: "use --device cpu or auto to run on a software adapter (SwiftShader), or install the GPU's Vulkan driver",
    });
  }
  const dawn = await loadDawn();
  const gpu = acquireInstance(dawn);
  try {
    const found = await adapters(gpu);
    const hardware = found.find((adapter) => !isSoftwareAdapterInfo(adapter.info));
    const software = found.find((adapter) => isSoftwareAdapterInfo(adapter.info));
    const adapter = choice === 'gpu' ? hardware : choice === 'cpu' ? software : (hardware ?? software);
    if (adapter === undefined) {
      const seen = found.map((entry) => describeAdapter(entry.info, isSoftwareAdapterInfo(entry.info))).join(', ') || 'none';
      throw new PolyquantError(
        ERROR_CODES.UNSUPPORTED,
        choice === 'gpu'
          ? `--device gpu: the webgpu engine found no hardware WebGPU adapter: Dawn offers only ${seen} (a software adapter runs on the CPU)`
          : `the webgpu engine found no ${choice === 'cpu' ? 'software ' : ''}WebGPU adapter (Dawn's adapters: ${seen})`,
        {
          hint:
            choice === 'gpu'
              ? 'use --device cpu or auto to run on a software adapter (SwiftShader), or install the GPU\'s Vulkan driver'
              : 'install a Vulkan loader (libvulkan1) and a driver: a GPU\'s, or SwiftShader (Debian\'s chromium package ships one), or Mesa lavapipe ≥ 25',
        },
      );
    }
    const limits = adapter.limits;
    const requested: Record<string, number> = options.requiredLimits !== undefined
      ? { ...options.requiredLimits }
      : { maxBufferSize: limits.maxBufferSize, maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize };
    for (const [key, value] of Object.entries(requested)) {
      const offered = (limits as unknown as Record<string, number>)[key];
      if (offered !== undefined) requested[key] = Math.min(value, offered);
    }
    const info = adapter.info;
    const device = await adapter.requestDevice({ requiredLimits: requested });
    const isSoftware = isSoftwareAdapterInfo(info);
    let released = false;
    return {
      device,
      adapterInfo: info,
      software: isSoftware,
      description: describeAdapter(info, isSoftware),
      release() {
        if (released) return;
        released = true;
        device.destroy();
        releaseInstance();
      },
    };
  } catch (error) {
    releaseInstance();
    throw error;
  }
}
