/// <reference types="@webgpu/types" />
/**
 * A WebGPU device for tests (Dawn through the `webgpu` package; SwiftShader on machines without a GPU), or
 * undefined with the reason when none can be made: test files skip then, saying why.
 */
import { type DawnDevice, openDawnDevice } from '../../src/verify/engines/webgpu-dawn.js';

export async function openTestDevice(): Promise<{ dawn: DawnDevice | undefined; reason: string }> {
  try {
    const dawn = await openDawnDevice({ device: 'auto' });
    return { dawn, reason: '' };
  } catch (error) {
    return { dawn: undefined, reason: error instanceof Error ? error.message : String(error) };
  }
}

/** Copies a storage buffer's first `bytes` back to the CPU. */
export async function readBuffer(device: GPUDevice, buffer: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
  const size = Math.ceil(bytes / 4) * 4;
  const staging = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, size);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const copy = staging.getMappedRange().slice(0, bytes);
  staging.unmap();
  staging.destroy();
  return copy;
}

/** Fails the test on any validation or internal error of the device inside `body`. */
export async function withErrorScope<T>(device: GPUDevice, body: () => Promise<T>): Promise<T> {
  device.pushErrorScope('validation');
  device.pushErrorScope('internal');
  const result = await body();
  const internal = await device.popErrorScope();
  const validation = await device.popErrorScope();
  const error = validation ?? internal;
  if (error !== null) throw new Error(`WebGPU error: ${error.message}`);
  return result;
}
