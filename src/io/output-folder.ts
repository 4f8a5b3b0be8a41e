/**
 * Writing a whole output folder atomically (synth's checkpoint, an ONNX model folder): the folder is built
 * under a temp name beside its final place (`.NAME.<pid>.partial`) and renamed into place at the end, so a
 * failure or an interrupt leaves nothing behind and a reader never sees half a model. An existing folder
 * is replaced only with `force`, and only when it holds nothing but files the same writer writes, never
 * when it is (or holds) a filesystem root, the home folder or the working folder.
 */
import { closeSync, openSync, renameSync, writeSync } from 'node:fs';
import { lstat, mkdir, readdir, realpath, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, parse, relative, sep } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { ioError, pathExists } from './file.js';
import { checkOutputFolder } from './output.js';
import { escapeRegExp, removeStaleTemps, trackTemp } from './temp.js';

export interface FolderOwnership {
  /** Who writes the folder, for messages ("synth", "convert --to onnx"). */
  readonly writer: string;
  /** Whether an entry (a regular file, or a folder when `folder` is true) is one this writer writes. */
  readonly owns: (name: string, folder: boolean) => boolean;
  /** What the writer writes, for the hint of a refusal. */
  readonly describe: string;
  /** The flag that names the folder (`--out`). */
  readonly flag: string;
}

/** Whether `path` is `ancestor` or lies inside it. */
function isWithin(path: string, ancestor: string): boolean {
  const rel = relative(ancestor, path);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** Checks an existing folder's entries (recursing into owned sub-folders) against the writer's names. */
async function checkOwnedEntries(dir: string, ownership: FolderOwnership, prefix: string): Promise<void> {
  const entries = await readdir(dir).catch((error: unknown) => {
    throw ioError(dir, 'list the output folder', error);
  });
  for (const name of entries) {
    const info = await lstat(join(dir, name)).catch(() => undefined);
    const folder = info?.isDirectory() === true;
    const owned = (info?.isFile() === true || folder) && ownership.owns(`${prefix}${name}`, folder);
    if (!owned) {
      throw new PolyquantError(
        ERROR_CODES.USAGE,
        `--force replaces only a folder of ${ownership.writer}'s own files, and this one holds ${JSON.stringify(`${prefix}${name}`)}${folder ? ' (a folder)' : ''}`,
        { file: dir, hint: `${ownership.writer} writes ${ownership.describe}; move the other files away or choose another ${ownership.flag}` },
      );
    }
    if (folder) await checkOwnedEntries(join(dir, name), ownership, `${prefix}${name}/`);
  }
}

/**
 * Checks an existing output folder before anything is written: an empty one is fine; a non-empty one
 * needs `force` and must hold only the writer's own files, and may not be or hold a protected folder.
 */
async function checkExistingOutput(out: string, force: boolean, ownership: FolderOwnership): Promise<void> {
  const entries = await readdir(out).catch((error: unknown) => {
    throw ioError(out, 'list the output folder', error);
  });
  if (entries.length === 0) return;
  if (!force) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'output folder exists and is not empty', {
      file: out,
      hint: `choose another ${ownership.flag} or pass --force to replace it`,
    });
  }
  const protectedFolders = [parse(out).root, homedir(), process.cwd()];
  for (const folder of protectedFolders) {
    const real = await realpath(folder).catch(() => folder);
    if (isWithin(real, out)) {
      const what = real === parse(out).root ? 'the filesystem root' : real === process.cwd() ? 'the working folder' : 'the home folder';
      throw new PolyquantError(ERROR_CODES.USAGE, `--force will not replace ${out}: it is or holds ${what} (${real})`, {
        file: out,
        hint: `give ${ownership.flag} a folder of its own, e.g. ./tiny-model`,
      });
    }
  }
  await checkOwnedEntries(out, ownership, '');
}

/**
 * Where a folder will be written, checked before any work (a typo must not cost a whole conversion): the
 * path made absolute with symlinks followed. Throws for a non-folder, or an existing folder that may not
 * be replaced.
 */
export async function checkFolderOutput(path: string, force: boolean, ownership: FolderOwnership): Promise<string> {
  // A symlink to a folder is followed: the folder it points to is what gets replaced.
  const out = await checkOutputFolder(path, ownership.flag);
  if (await pathExists(out)) await checkExistingOutput(out, force, ownership);
  return out;
}

/**
 * Runs `write` on a fresh temp folder beside `out` and renames it into place (replacing an existing folder
 * in one synchronous step, so no signal handler runs between the renames). `out` must come from
 * `checkFolderOutput`; it is checked again here, as time may have passed.
 */
export async function writeFolderAtomically<T>(
  out: string,
  force: boolean,
  ownership: FolderOwnership,
  write: (temp: string) => Promise<T>,
): Promise<T> {
  const exists = await pathExists(out);
  if (exists) await checkExistingOutput(out, force, ownership);
  const parent = dirname(out);
  const name = basename(out);
  // Temps of a writer that was killed before it could clean up: ours by name, and their process is gone.
  await removeStaleTemps(parent, new RegExp(`^\\.${escapeRegExp(name)}\\.(\\d+)\\.(?:partial|old)$`));
  const temp = join(parent, `.${name}.${process.pid}.partial`);
  await rm(temp, { recursive: true, force: true });
  try {
    await mkdir(temp, { recursive: true });
  } catch (error) {
    throw ioError(temp, 'create the output folder', error);
  }
  const untrack = trackTemp(temp);
  try {
    const result = await write(temp);
    if (exists) {
      const old = join(parent, `.${name}.${process.pid}.old`);
      try {
        renameSync(out, old);
      } catch (error) {
        throw ioError(out, 'move the old output folder aside', error);
      }
      try {
        renameSync(temp, out);
      } catch (error) {
        renameSync(old, out);
        throw ioError(out, 'replace the output folder', error);
      }
      untrack();
      const untrackOld = trackTemp(old);
      await rm(old, { recursive: true, force: true });
      untrackOld();
    } else {
      try {
        renameSync(temp, out);
      } catch (error) {
        throw ioError(out, 'move the output folder into place', error);
      }
      untrack();
    }
    return result;
  } catch (error) {
    untrack();
    await rm(temp, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Positioned writes into the files of an output folder being built (a converter's shards or data files,
 * planned before any byte is written): each file is created on its first write and kept open until close.
 * `what` names the files in messages ("shard", "external data file").
 */
export class PositionedFiles {
  private readonly descriptors = new Map<string, number>();
  constructor(
    private readonly dir: string,
    private readonly what: string,
  ) {}

  write(file: string, offset: number, bytes: Uint8Array): void {
    const path = join(this.dir, file);
    let fd = this.descriptors.get(file);
    if (fd === undefined) {
      try {
        fd = openSync(path, 'w');
      } catch (error) {
        throw ioError(path, `create the ${this.what}`, error);
      }
      this.descriptors.set(file, fd);
    }
    let written = 0;
    try {
      while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written, offset + written);
    } catch (error) {
      throw ioError(path, `write the ${this.what}`, error);
    }
  }

  close(): void {
    for (const fd of this.descriptors.values()) closeSync(fd);
    this.descriptors.clear();
  }
}
