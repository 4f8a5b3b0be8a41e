/// <reference types="@webgpu/types" />
/**
 * The GPUDevice as the runtime uses it: compiled pipelines (cached by WGSL source), the limits that size
 * workgroups and binding windows, and a command recorder that turns a list of dispatches and copies into
 * one command buffer.
 *
 * Uniforms: every dispatch gets its own 256-byte slot (the largest minUniformBufferOffsetAlignment the spec
 * allows, so any adapter's alignment divides it) in one arena buffer, written with a single writeBuffer just
 * before the command buffer is submitted. Queue order makes reusing the arena safe: a later forward's write
 * lands after the earlier command buffer ran.
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import type { KernelFamily } from './kernels.js';

const UNIFORM_SLOT_BYTES = 256;

export interface GpuContextOptions {
  /**
   * Kernel family: `software` (no workgroup barriers; what CPU adapters such as SwiftShader run fast) or
   * `hardware`. Default: `software` when the adapter info says it is a fallback/CPU adapter, else `hardware`.
   */
  readonly family?: KernelFamily;
  /**
   * Largest storage binding the runtime makes for a weight, in bytes (default and ceiling: the device's
   * maxStorageBufferBindingSize). Weights larger than this are bound in row windows (weights.ts); lowering
   * it exercises that path on a small model.
   */
  readonly maxBindingBytes?: number;
  /** Threads per workgroup for 1-D kernels (default 64, capped by the device's limits). */
  readonly workgroupSize?: number;
}

/** Whether adapter info describes a CPU implementation (SwiftShader, lavapipe/llvmpipe, WARP) or a fallback adapter. */
export function isSoftwareAdapterInfo(info: GPUAdapterInfo | undefined): boolean {
  if (info === undefined) return false;
  if ((info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter === true) return true;
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase();
  // lavapipe reports architecture "software"; WARP is "Microsoft Basic Render Driver".
  return /swiftshader|llvmpipe|lavapipe|softpipe|microsoft basic render|\bwarp\b|\bsoftware\b/.test(text);
}

export class GpuContext {
  readonly family: KernelFamily;
  readonly workgroupSize: number;
  readonly maxBindingBytes: number;
  /** minStorageBufferOffsetAlignment: binding window offsets are multiples of it. */
  readonly storageAlignment: number;
  readonly maxBufferSize: number;
  /** The device's own binding limit (activations are bound whole and must fit it). */
  readonly deviceMaxBindingBytes: number;
  readonly maxWorkgroupsPerDimension: number;
  private readonly pipelines = new Map<string, Promise<GPUComputePipeline>>();
  private readonly ready = new Map<string, GPUComputePipeline>();
  private arena: GPUBuffer | undefined;

  constructor(
    readonly device: GPUDevice,
    options: GpuContextOptions = {},
    adapterInfo: GPUAdapterInfo | undefined = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo,
  ) {
    const limits = device.limits;
    this.family = options.family ?? (isSoftwareAdapterInfo(adapterInfo) ? 'software' : 'hardware');
    const maxThreads = Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
    const requested = options.workgroupSize ?? 64;
    if (!Number.isSafeInteger(requested) || requested < 4 || (requested & (requested - 1)) !== 0) {
      throw new PolyquantError(ERROR_CODES.USAGE, `workgroupSize is ${requested}; expected a power of two of at least 4`);
    }
    this.workgroupSize = Math.min(requested, 2 ** Math.floor(Math.log2(maxThreads)));
    this.deviceMaxBindingBytes = limits.maxStorageBufferBindingSize;
    const binding = options.maxBindingBytes ?? limits.maxStorageBufferBindingSize;
    if (!Number.isSafeInteger(binding) || binding < 256) {
      throw new PolyquantError(ERROR_CODES.USAGE, `maxBindingBytes is ${binding}; expected an integer of at least 256`);
    }
    this.maxBindingBytes = Math.floor(Math.min(binding, limits.maxStorageBufferBindingSize) / 4) * 4;
    this.storageAlignment = limits.minStorageBufferOffsetAlignment;
    this.maxBufferSize = limits.maxBufferSize;
    this.maxWorkgroupsPerDimension = limits.maxComputeWorkgroupsPerDimension;
  }

  /** Compiles (once per source) a compute pipeline with an automatic layout; shader errors reject with UNSUPPORTED. */
  pipeline(source: string): Promise<GPUComputePipeline> {
    let pending = this.pipelines.get(source);
    if (pending === undefined) {
      const module = this.device.createShaderModule({ code: source });
      pending = this.device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } }).then(
        (pipeline) => {
          this.ready.set(source, pipeline);
          return pipeline;
        },
        async (error: unknown) => {
          const info = await module.getCompilationInfo().catch(() => undefined);
          const messages = info?.messages.map((message) => `${message.lineNum}:${message.linePos} ${message.message}`).join('; ');
          throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the adapter could not compile a WGSL kernel: ${messages || (error instanceof Error ? error.message : String(error))}`, {
            cause: error,
          });
        },
      );
      this.pipelines.set(source, pending);
    }
    return pending;
  }

  /** A pipeline compiled before (by `pipeline`), synchronously. */
  compiled(source: string): GPUComputePipeline {
    const pipeline = this.ready.get(source);
    if (pipeline === undefined) throw new Error('internal: a kernel was dispatched before its pipeline was compiled');
    return pipeline;
  }

  /** A buffer; sizes are rounded up to 4 bytes (writeBuffer and bindings work in words). */
  createBuffer(size: number, usage: GPUBufferUsageFlags, label: string): GPUBuffer {
    const bytes = Math.max(4, Math.ceil(size / 4) * 4);
    if (bytes > this.maxBufferSize) {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `${label} needs a ${bytes}-byte buffer, larger than this device's maxBufferSize ${this.maxBufferSize}`, {
        hint: 'use a smaller context length or another adapter',
      });
    }
    return this.device.createBuffer({ size: bytes, usage, label });
  }

  /** The uniform arena, grown to at least `bytes`. */
  uniformArena(bytes: number): GPUBuffer {
    if (this.arena === undefined || this.arena.size < bytes) {
      this.arena?.destroy();
      this.arena = this.device.createBuffer({ size: Math.max(bytes, 64 * UNIFORM_SLOT_BYTES), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'uniforms' });
    }
    return this.arena;
  }

  destroy(): void {
    this.arena?.destroy();
    this.arena = undefined;
    this.pipelines.clear();
    this.ready.clear();
  }
}

/** A storage binding: a whole buffer or a window of it. */
export type Binding = GPUBuffer | { readonly buffer: GPUBuffer; readonly offset: number; readonly size: number };

type Operation =
  | {
      readonly kind: 'dispatch';
      readonly pipeline: GPUComputePipeline;
      readonly slot: number;
      readonly uniformSize: number;
      readonly bindings: ReadonlyMap<number, Binding>;
      readonly workgroups: readonly [number, number, number];
    }
  | { readonly kind: 'copy'; readonly source: GPUBuffer; readonly sourceOffset: number; readonly target: GPUBuffer; readonly targetOffset: number; readonly size: number };

/** Collects dispatches and copies, then encodes them into one command buffer (consecutive dispatches share a compute pass). */
export class Recorder {
  private readonly operations: Operation[] = [];
  private readonly uniforms: Uint8Array[] = [];

  constructor(private readonly context: GpuContext) {}

  /**
   * One dispatch of `source` (compiled before) with `uniform` at binding 0 and `bindings` at theirs.
   * `workgroups` beyond maxComputeWorkgroupsPerDimension in x must be split by the caller (flatGrid).
   */
  dispatch(source: string, uniform: ArrayBufferView, bindings: Readonly<Record<number, Binding>>, workgroups: readonly [number, number?, number?]): void {
    const [x, y = 1, z = 1] = workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    const limit = this.context.maxWorkgroupsPerDimension;
    if (x > limit || y > limit || z > limit) throw new Error(`internal: dispatch of ${x}×${y}×${z} workgroups passes the per-dimension limit ${limit}`);
    const bytes = new Uint8Array(uniform.buffer, uniform.byteOffset, uniform.byteLength);
    if (bytes.length > UNIFORM_SLOT_BYTES) throw new Error('internal: a uniform is larger than its slot');
    this.uniforms.push(bytes);
    this.operations.push({
      kind: 'dispatch',
      pipeline: this.context.compiled(source),
      slot: this.uniforms.length - 1,
      uniformSize: Math.ceil(bytes.length / 16) * 16,
      bindings: new Map(Object.entries(bindings).map(([key, value]) => [Number(key), value])),
      workgroups: [x, y, z],
    });
  }

  copy(source: GPUBuffer, sourceOffset: number, target: GPUBuffer, targetOffset: number, size: number): void {
    if (size > 0) this.operations.push({ kind: 'copy', source, sourceOffset, target, targetOffset, size });
  }

  /** Writes the uniforms and encodes everything; the caller submits. */
  finish(): GPUCommandBuffer {
    const device = this.context.device;
    const arena = this.context.uniformArena(Math.max(1, this.uniforms.length) * UNIFORM_SLOT_BYTES);
    const data = new Uint8Array(this.uniforms.length * UNIFORM_SLOT_BYTES);
    for (const [slot, bytes] of this.uniforms.entries()) data.set(bytes, slot * UNIFORM_SLOT_BYTES);
    if (data.length > 0) device.queue.writeBuffer(arena, 0, data);
    const encoder = device.createCommandEncoder();
    let pass: GPUComputePassEncoder | undefined;
    for (const operation of this.operations) {
      if (operation.kind === 'copy') {
        pass?.end();
        pass = undefined;
        encoder.copyBufferToBuffer(operation.source, operation.sourceOffset, operation.target, operation.targetOffset, operation.size);
        continue;
      }
      const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: arena, offset: operation.slot * UNIFORM_SLOT_BYTES, size: operation.uniformSize } }];
      for (const [binding, value] of operation.bindings) {
        entries.push({ binding, resource: 'buffer' in value ? { buffer: value.buffer, offset: value.offset, size: value.size } : { buffer: value } });
      }
      const group = device.createBindGroup({ layout: operation.pipeline.getBindGroupLayout(0), entries });
      pass ??= encoder.beginComputePass();
      pass.setPipeline(operation.pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(...operation.workgroups);
    }
    pass?.end();
    return encoder.finish();
  }
}

/**
 * A 2-D grid of `size`-wide workgroups covering `count` invocations, for kernels that flatten
 * `gid.x + gid.y · (num_workgroups.x · size)` (kernels.ts FLAT_INDEX): x stays within the per-dimension limit.
 */
export function flatGrid(count: number, size: number, limit: number): [number, number] {
  const groups = Math.ceil(count / size);
  if (groups <= limit) return [groups, 1];
  const x = limit;
  return [x, Math.ceil(groups / x)];
}
