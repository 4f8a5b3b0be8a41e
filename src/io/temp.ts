/**
 * Temp files and folders in flight, so that an interrupt leaves nothing behind: every writer registers
 * the temp name it writes under (AtomicFile's `.NAME.<pid>.<hex>.tmp`, synth's `.OUT.<pid>.partial/`,
 * demo's `polyquant-demo-<pid>-*`), the CLI's SIGINT/SIGTERM handler removes what is registered, and a
 * later run removes stale temps of its own naming pattern whose process is gone.
 */
import { rmSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

const inFlight = new Set<string>();

/** Registers a temp path (file or folder) in flight; the returned function unregisters it. */
export function trackTemp(path: string): () => void {
  inFlight.add(path);
  return () => {
    inFlight.delete(path);
  };
}

/** The temp paths in flight now (for tests and the signal handler). */
export function trackedTemps(): string[] {
  return [...inFlight];
}

/**
 * Removes every registered temp path, synchronously: called from a signal handler right before the
 * process exits, when no promise will run again. Failures are ignored (the path may be gone already).
 */
export function removeTrackedTempsSync(): string[] {
  const removed: string[] = [];
  for (const path of inFlight) {
    try {
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // Nothing more can be done while exiting; a later run sweeps it as stale.
    }
  }
  inFlight.clear();
  return removed;
}

/** Whether a process with this id exists (EPERM: it does, owned by someone else). */
export function isProcessAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Escapes a file name for use inside a RegExp. */
export function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Removes entries of `dir` whose name matches `pattern` (its first capture group is the writer's pid)
 * and whose process is no longer alive: temps an interrupted or killed run of polyquant left behind. Only
 * names of our own patterns are ever touched, and never one a live process may still be writing.
 */
export async function removeStaleTemps(dir: string, pattern: RegExp): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const match = pattern.exec(name);
    if (match === null) continue;
    const pid = Number(match[1]);
    if (isProcessAlive(pid)) continue;
    const path = join(dir, name);
    if (inFlight.has(path)) continue;
    await rm(path, { recursive: true, force: true }).catch(() => undefined);
    removed.push(path);
  }
  return removed;
}
