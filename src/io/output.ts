/**
 * Where outputs may go, checked before any work starts (a multi-hour run must never lose its result to a
 * typo at the end):
 *
 * - an output file is written under a temp name in its directory and renamed over the final name
 *   (AtomicFile), so only a regular file or a new name can be an output: a directory, character or block
 *   device, FIFO or socket is refused, never replaced by a file;
 * - a symlink is followed: the file it points to is replaced (atomically, by a temp file in the target's
 *   directory), and the link itself stays;
 * - the directory must exist, be a directory and be writable;
 * - an output that resolves (realpath, or the same device and inode: a hard link) to a file the command
 *   reads is refused, so an input can never be overwritten by its own output.
 */
import { constants as fsConstants, type Stats } from 'node:fs';
import { access, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { fileKind, followSymlinks, ioError } from './file.js';

export interface OutputFile {
  /** The flag that named it (`--out`, `--json`), for messages. */
  readonly flag: string;
  /** The path as given, made absolute. */
  readonly path: string;
  /** Where the bytes go: `path` with every symlink followed (the directory part resolved with realpath). */
  readonly target: string;
  /** The existing file's identity, when there is one. */
  readonly existing: { readonly dev: number; readonly ino: number } | undefined;
}

/**
 * Checks an output file's location before any work: see the module comment. Returns where the bytes
 * will go. `flag` names the option in messages (`--out`, `--json`).
 */
export async function checkOutputFile(path: string, flag: string): Promise<OutputFile> {
  if (path === '') throw new PolyquantError(ERROR_CODES.USAGE, `${flag} is empty; give a file name`);
  const absolute = resolve(path);
  const followed = await followSymlinks(absolute);
  const folder = dirname(followed);
  let folderInfo: Stats;
  try {
    folderInfo = await stat(folder);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new PolyquantError(ERROR_CODES.NOT_FOUND, `${flag}: the folder ${folder} does not exist`, {
        file: absolute,
        hint: 'create the folder first, or choose another path',
      });
    }
    throw ioError(folder, `check the folder of ${flag}`, error);
  }
  if (!folderInfo.isDirectory()) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${flag}: ${folder} is a ${fileKind(folderInfo)}, not a folder`, { file: absolute });
  }
  const target = join(await realpath(folder), basename(followed));
  let existing: OutputFile['existing'];
  try {
    const info = await stat(target);
    if (!info.isFile()) {
      const what = fileKind(info);
      throw new PolyquantError(
        ERROR_CODES.USAGE,
        `${flag} ${path} is a ${what}${followed === absolute ? '' : ` (through a symlink to ${target})`}; polyquant writes only regular files`,
        { file: absolute, hint: info.isDirectory() ? 'give a file name inside the folder' : `a ${what} is never replaced by a file; choose a file name` },
      );
    }
    existing = { dev: info.dev, ino: info.ino };
  } catch (error) {
    if (error instanceof PolyquantError) throw error;
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(target, `check ${flag}`, error);
  }
  try {
    // The temp file is created in this folder and renamed over the target: the folder must be writable.
    await access(dirname(target), fsConstants.W_OK | fsConstants.X_OK);
  } catch (error) {
    throw new PolyquantError(ERROR_CODES.IO, `${flag}: the folder ${dirname(target)} is not writable`, { file: absolute, cause: error });
  }
  return { flag, path: absolute, target, existing };
}

/**
 * Checks an output folder (synth --out, demo --out): it may be absent (its parent is then made), or an
 * existing folder (through symlinks); anything else is refused.
 */
export async function checkOutputFolder(path: string, flag: string): Promise<string> {
  if (path === '') throw new PolyquantError(ERROR_CODES.USAGE, `${flag} is empty; give a folder name`);
  const absolute = resolve(path);
  const followed = await followSymlinks(absolute);
  try {
    const info = await stat(followed);
    if (!info.isDirectory()) {
      throw new PolyquantError(ERROR_CODES.USAGE, `${flag} ${path} is a ${fileKind(info)}, not a folder`, { file: absolute });
    }
    return await realpath(followed);
  } catch (error) {
    if (error instanceof PolyquantError) throw error;
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(followed, `check ${flag}`, error);
    return followed;
  }
}

interface InputIdentity {
  readonly path: string;
  readonly real: string;
  readonly dev: number;
  readonly ino: number;
}

async function identify(path: string): Promise<InputIdentity | undefined> {
  try {
    const info = await stat(path);
    return { path, real: await realpath(path), dev: info.dev, ino: info.ino };
  } catch {
    return undefined;
  }
}

/**
 * Refuses (USAGE, exit 2) any output that is one of `inputs` or the same file under another name (a
 * symlink resolves to it, or a hard link shares its device and inode), and two outputs that are the same
 * file. `inputs` are the files the command reads (absent ones are skipped: they cannot be overwritten).
 */
export async function refuseOverwritingInputs(outputs: readonly OutputFile[], inputs: readonly string[]): Promise<void> {
  const files: InputIdentity[] = [];
  for (const input of inputs) {
    const identity = await identify(resolve(input));
    if (identity !== undefined) files.push(identity);
  }
  const refuse = (output: OutputFile, input: string): never => {
    throw new PolyquantError(ERROR_CODES.USAGE, `${output.flag} ${output.path} would overwrite ${input}, which this command reads`, {
      file: output.path,
      hint: `choose another ${output.flag}`,
    });
  };
  for (const output of outputs) {
    for (const input of files) {
      if (input.real === output.target) refuse(output, input.path);
      if (output.existing !== undefined && output.existing.dev === input.dev && output.existing.ino === input.ino) refuse(output, input.path);
    }
  }
  for (const [index, output] of outputs.entries()) {
    for (const other of outputs.slice(index + 1)) {
      if (other.target === output.target) {
        throw new PolyquantError(ERROR_CODES.USAGE, `${output.flag} and ${other.flag} name the same file ${output.target}`, {
          hint: 'give each output its own file',
        });
      }
    }
  }
}
