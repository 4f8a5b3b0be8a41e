/**
 * Is there any GPU a backend could use? A look at /dev before any GPU backend is loaded, so `--device
 * auto` on a CPU-only Linux machine costs nothing: node-llama-cpp's Vulkan build, asked for a GPU there,
 * spent ~2.3 s initialising Vulkan with no driver before falling back to its CPU build (and with only a
 * CPU Vulkan driver such as lavapipe it loaded the Vulkan build and found 0 GPU devices in it).
 *
 * Every Linux GPU driver a backend of ours can use creates a device node: NVIDIA's `/dev/nvidia0` (CUDA
 * and its Vulkan driver), a DRM render node `/dev/dri/renderD128` (Mesa's Vulkan drivers for AMD and
 * Intel, NVIDIA's too), AMD ROCm's `/dev/kfd`, and WSL2's GPU paravirtualisation `/dev/dxg`. With none of
 * them, `auto` means the CPU and `gpu` fails at once. Elsewhere (macOS Metal, Windows) nothing is decided
 * here and the backends probe as before. POLYQUANT_GPU_PROBE=backends skips this look (a setup whose GPU
 * shows up under another name): the backends then probe, and an empty GPU list is still caught by the
 * engines' own device checks.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

export interface GpuHardwareProbe {
  /** false: no GPU device node, so no backend can use a GPU. true: one was found, or this platform is not checked. */
  readonly present: boolean;
  /** The device nodes found (e.g. `/dev/nvidia0`, `/dev/dri/renderD128`). */
  readonly found: readonly string[];
  /** In words, for reports and error messages: what was looked at and what it showed. */
  readonly summary: string;
}

/** The device nodes looked for, as a user reads them. */
export const GPU_DEVICE_NODES = '/dev/nvidia*, /dev/dri/renderD*, /dev/kfd, /dev/dxg';

const NODE_PATTERNS: readonly RegExp[] = [/^nvidia\d+$/, /^kfd$/, /^dxg$/];
const RENDER_NODE = /^renderD\d+$/;

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** The probe on `platform` with `/dev` at `devRoot` (parameters for tests); see the module comment. */
export function probeGpuHardware(
  platform: NodeJS.Platform = process.platform,
  devRoot = '/dev',
  env: Readonly<Record<string, string | undefined>> = process.env,
): GpuHardwareProbe {
  if (env['POLYQUANT_GPU_PROBE'] === 'backends') {
    return { present: true, found: [], summary: 'POLYQUANT_GPU_PROBE=backends: GPU device nodes not checked, the backends probe' };
  }
  if (platform !== 'linux') return { present: true, found: [], summary: `${platform}: left to the backends to probe` };
  const found = [
    ...list(devRoot).filter((name) => NODE_PATTERNS.some((pattern) => pattern.test(name))).map((name) => join(devRoot, name)),
    ...list(join(devRoot, 'dri')).filter((name) => RENDER_NODE.test(name)).map((name) => join(devRoot, 'dri', name)),
  ].sort();
  return found.length > 0
    ? { present: true, found, summary: `GPU device node(s) ${found.join(', ')}` }
    : { present: false, found, summary: `no GPU device node on this machine (looked for ${GPU_DEVICE_NODES})` };
}
