/**
 * Positional file reads and atomic output. Every reader goes through here so that short reads, missing
 * files and OS errors become PolyquantErrors naming the file, and every writer writes to a temp name and
 * renames at the end, so a failure never leaves a half-written output behind.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, constants as fsConstants, openSync, readSync, type Stats } from 'node:fs';
import { type FileHandle, lstat, open, readlink, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { escapeRegExp, removeStaleTemps, trackTemp } from './temp.js';

/** Turns a Node fs error into our error type, naming the file. */
export function ioError(file: string, action: string, error: unknown): PolyquantError {
  if (error instanceof PolyquantError) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return new PolyquantError(ERROR_CODES.NOT_FOUND, `no such file or directory`, { file });
  const reason = error instanceof Error ? error.message : String(error);
  return new PolyquantError(ERROR_CODES.IO, `could not ${action}: ${reason}`, { file, cause: error });
}

/** A range some header promised must lie inside the file; past the end means the file is truncated. */
function checkRange(path: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, `invalid byte range ${offset}+${length}`, { file: path });
  }
  if (offset + length > size) {
    throw new PolyquantError(
      ERROR_CODES.MALFORMED,
      `byte range ${offset}..${offset + length} runs past the end of the file (${size} bytes); the file is truncated`,
      { file: path },
    );
  }
}

/** A read that returned no bytes before the range was complete: the file shrank under us. */
function endedEarly(path: string, at: number): PolyquantError {
  return new PolyquantError(ERROR_CODES.MALFORMED, `file ended after ${at} bytes while reading`, {
    file: path,
    hint: 'the file changed or was truncated while polyquant read it',
  });
}

/**
 * Inputs are opened non-blocking: opening a FIFO for reading would otherwise wait forever for a writer.
 * The flag changes nothing for regular files, and anything that is not one is refused right after open.
 * (Windows has no O_NONBLOCK and no FIFOs in the file system.)
 */
const OPEN_INPUT_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0);

/** What a file is, in words, for messages. */
export function fileKind(info: Stats): string {
  if (info.isFile()) return 'regular file';
  if (info.isDirectory()) return 'folder';
  if (info.isFIFO()) return 'FIFO (named pipe)';
  if (info.isSocket()) return 'socket';
  if (info.isCharacterDevice()) return 'character device';
  if (info.isBlockDevice()) return 'block device';
  if (info.isSymbolicLink()) return 'symbolic link';
  return 'special file';
}

/** The kind of a non-regular file with its article ("a FIFO (named pipe)"), or "not a regular file" when unnamed. */
function kindOf(info: Stats): string {
  const kind = fileKind(info);
  return kind === 'special file' ? 'not a regular file' : `a ${kind}`;
}

/** polyquant reads only regular files: a FIFO, device or socket would hang or never end. */
function notRegular(path: string, info: Stats): PolyquantError {
  const kind = kindOf(info);
  return new PolyquantError(ERROR_CODES.USAGE, kind === 'not a regular file' ? 'is not a regular file' : `is ${kind}, not a regular file`, {
    file: path,
    hint: info.isDirectory() ? 'give a file inside the folder' : 'polyquant reads model, text and data files only from regular files; copy the stream to a file first',
  });
}

/** A read-only file opened for positional reads. */
export class ReadableFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly size: number,
  ) {}

  static async open(path: string): Promise<ReadableFile> {
    let handle: FileHandle;
    try {
      handle = await open(path, OPEN_INPUT_FLAGS);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EISDIR') {
        throw new PolyquantError(ERROR_CODES.USAGE, 'is a folder, not a regular file', { file: path, hint: 'give a file inside the folder' });
      }
      throw ioError(path, 'open the file', error);
    }
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw notRegular(path, info);
      return new ReadableFile(path, handle, info.size);
    } catch (error) {
      await handle.close();
      throw ioError(path, 'stat the file', error);
    }
  }

  /**
   * Reads exactly `length` bytes at `offset` into `target` (or a new buffer). A range past the end of
   * the file is a MALFORMED error: some header promised bytes the file does not have.
   */
  async read(offset: number, length: number, target?: Uint8Array): Promise<Uint8Array> {
    checkRange(this.path, this.size, offset, length);
    // allocUnsafeSlow: the bytes are overwritten at once, so zero-filling would only cost bandwidth; and unlike
    // allocUnsafe it never hands out a slice of a shared pool, so `buffer.buffer` belongs to this read alone.
    const buffer = target ?? Buffer.allocUnsafeSlow(length);
    let done = 0;
    while (done < length) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await this.handle.read(buffer, done, length - done, offset + done));
      } catch (error) {
        throw ioError(this.path, 'read the file', error);
      }
      if (bytesRead === 0) throw endedEarly(this.path, offset + done);
      done += bytesRead;
    }
    return buffer;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/**
 * A file read with synchronous positional reads, for streaming tensor rows. For data in the page cache the
 * thread-pool hop of an async read, and of an async open/stat/close per tensor, costs more than the copy
 * itself (BENCHMARKS.md); each call here blocks for one chunk at most.
 */
export class SyncFileReader {
  private constructor(
    readonly path: string,
    private fd: number,
    readonly size: number,
  ) {}

  static open(path: string): SyncFileReader {
    let fd: number;
    try {
      fd = openSync(path, OPEN_INPUT_FLAGS);
    } catch (error) {
      throw ioError(path, 'open the file', error);
    }
    try {
      const info = fstatSync(fd);
      if (!info.isFile()) throw notRegular(path, info);
      return new SyncFileReader(path, fd, info.size);
    } catch (error) {
      closeSync(fd);
      throw ioError(path, 'stat the file', error);
    }
  }

  /** Reads exactly `length` bytes at `offset` into the start of `target` and returns that part of it. */
  readInto(offset: number, length: number, target: Uint8Array): Uint8Array {
    checkRange(this.path, this.size, offset, length);
    if (length > target.length) {
      throw new PolyquantError(ERROR_CODES.USAGE, `a ${length}-byte read does not fit a ${target.length}-byte buffer`, { file: this.path });
    }
    let done = 0;
    while (done < length) {
      let bytesRead: number;
      try {
        bytesRead = readSync(this.fd, target, done, length - done, offset + done);
      } catch (error) {
        throw ioError(this.path, 'read the file', error);
      }
      if (bytesRead === 0) throw endedEarly(this.path, offset + done);
      done += bytesRead;
    }
    return target.subarray(0, length);
  }

  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }
}

/** Opens `path`, runs `body`, and always closes the file. */
export async function withFile<T>(path: string, body: (file: ReadableFile) => Promise<T>): Promise<T> {
  const file = await ReadableFile.open(path);
  try {
    return await body(file);
  } finally {
    await file.close();
  }
}

/**
 * Reads a whole (small) regular file: config and tokenizer JSON, text, KOBEST splits. Refuses anything
 * that is not a regular file and anything over `maxBytes` (named in the message as `what`).
 */
export async function readWholeFile(path: string, what: string, maxBytes: number): Promise<Uint8Array> {
  return withFile(path, async (file) => {
    if (file.size > maxBytes) {
      throw new PolyquantError(ERROR_CODES.LIMIT, `${what} is ${file.size} bytes, over the ${maxBytes}-byte limit`, { file: path });
    }
    return file.read(0, file.size);
  });
}

export async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch (error) {
    throw ioError(path, 'stat the file', error);
  }
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * An output file written under a temp name in the same directory and renamed over `path` by commit().
 * abort() (or a failed commit) removes the temp file, so the destination is either the old file or the
 * complete new one — never a partial write. (safetensors' serialize_to_file does the same.)
 */
export class AtomicFile {
  private position = 0;
  private closed = false;

  private constructor(
    /** The file renamed over at commit: the output path with symlinks followed. */
    readonly path: string,
    readonly tempPath: string,
    private readonly handle: FileHandle,
    private readonly untrack: () => void,
  ) {}

  /**
   * Opens a temp file next to where `path` really is: a symlink is followed, and the file it points to is
   * replaced (the link stays). A directory, device, FIFO or socket is refused, never replaced by a file.
   * Stale temps of this same output left by a process that no longer runs are removed first.
   */
  static async create(path: string): Promise<AtomicFile> {
    const target = await outputTarget(path);
    const name = basename(target);
    await removeStaleTemps(dirname(target), new RegExp(`^\\.${escapeRegExp(name)}\\.(\\d+)\\.[0-9a-f]{8}\\.tmp$`));
    const tempPath = join(dirname(target), `.${name}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    let handle: FileHandle;
    try {
      handle = await open(tempPath, 'wx');
    } catch (error) {
      throw ioError(path, 'create the output file', error);
    }
    return new AtomicFile(target, tempPath, handle, trackTemp(tempPath));
  }

  /** Bytes written so far. */
  get bytesWritten(): number {
    return this.position;
  }

  async write(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.length) {
      try {
        const { bytesWritten } = await this.handle.write(bytes, done, bytes.length - done, this.position);
        done += bytesWritten;
        this.position += bytesWritten;
      } catch (error) {
        throw ioError(this.path, 'write the output file', error);
      }
    }
  }

  /**
   * Writes at an absolute offset without moving the append position (used to patch a header whose
   * fields, such as a CRC, are only known after the data is written).
   */
  async writeAt(offset: number, bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.length) {
      try {
        const { bytesWritten } = await this.handle.write(bytes, done, bytes.length - done, offset + done);
        done += bytesWritten;
      } catch (error) {
        throw ioError(this.path, 'write the output file', error);
      }
    }
  }

  async commit(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.handle.close();
      await rename(this.tempPath, this.path);
    } catch (error) {
      await rm(this.tempPath, { force: true });
      throw ioError(this.path, 'finish the output file', error);
    } finally {
      this.untrack();
    }
  }

  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close().catch(() => undefined);
    await rm(this.tempPath, { force: true });
    this.untrack();
  }
}

/** Symlink hops followed for an output before giving up (Linux's MAXSYMLINKS). */
const MAX_SYMLINK_HOPS = 40;

/** Follows symlinks from `path` to the name that will really be written (which may not exist yet). */
export async function followSymlinks(path: string): Promise<string> {
  let current = resolve(path);
  for (let hop = 0; ; hop += 1) {
    let info: Stats;
    try {
      info = await lstat(current);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return current;
      throw ioError(current, 'check the path', error);
    }
    if (!info.isSymbolicLink()) return current;
    if (hop >= MAX_SYMLINK_HOPS) throw new PolyquantError(ERROR_CODES.USAGE, `more than ${MAX_SYMLINK_HOPS} symbolic links to follow`, { file: path });
    const link = await readlink(current).catch((error: unknown) => {
      throw ioError(current, 'read the symbolic link', error);
    });
    current = resolve(dirname(current), link);
  }
}

/** Where an output's bytes go: symlinks followed; anything but a regular file or a new name is refused. */
async function outputTarget(path: string): Promise<string> {
  const followed = await followSymlinks(path);
  const info = await stat(followed).catch(() => undefined);
  if (info !== undefined && !info.isFile()) {
    throw new PolyquantError(ERROR_CODES.USAGE, `the output is ${kindOf(info)}; polyquant writes only regular files and never replaces ${kindOf(info)}`, {
      file: path,
    });
  }
  try {
    return join(await realpath(dirname(followed)), basename(followed));
  } catch (error) {
    throw ioError(dirname(followed), 'open the output folder', error);
  }
}

/** Writes a UTF-8 text file atomically (a report): a temp name, renamed at the end. */
export async function writeTextAtomically(path: string, text: string): Promise<void> {
  await writeAtomically(resolve(path), (file) => file.write(new TextEncoder().encode(text)));
}

/** Writes a whole file atomically: `body` streams into it, and any error removes the temp file. */
export async function writeAtomically(path: string, body: (file: AtomicFile) => Promise<void>): Promise<void> {
  const file = await AtomicFile.create(path);
  try {
    await body(file);
    await file.commit();
  } catch (error) {
    await file.abort();
    throw error;
  }
}
