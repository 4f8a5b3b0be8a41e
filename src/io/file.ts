/**
 * Positional file reads and atomic output. Every reader goes through here so that short reads, missing
 * files and OS errors become PolyquantErrors naming the file, and every writer writes to a temp name and
 * renames at the end, so a failure never leaves a half-written output behind.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, constants as fsConstants, openSync, readSync } from 'node:fs';
import { type FileHandle, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../errors.js';

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
      handle = await open(path, fsConstants.O_RDONLY);
    } catch (error) {
      throw ioError(path, 'open the file', error);
    }
    try {
      const info = await handle.stat();
      if (!info.isFile()) {
        throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'is not a regular file', { file: path });
      }
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
      fd = openSync(path, fsConstants.O_RDONLY);
    } catch (error) {
      throw ioError(path, 'open the file', error);
    }
    try {
      return new SyncFileReader(path, fd, fstatSync(fd).size);
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
    readonly path: string,
    readonly tempPath: string,
    private readonly handle: FileHandle,
  ) {}

  static async create(path: string): Promise<AtomicFile> {
    const tempPath = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    let handle: FileHandle;
    try {
      handle = await open(tempPath, 'wx');
    } catch (error) {
      throw ioError(path, 'create the output file', error);
    }
    return new AtomicFile(path, tempPath, handle);
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
    }
  }

  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close().catch(() => undefined);
    await rm(this.tempPath, { force: true });
  }
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
