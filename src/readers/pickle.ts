/**
 * The pickle side of torch .bin files: a restricted unpickler that turns `data.pkl` into a list of tensor
 * descriptions, and the pickler that writes one the way torch.save does.
 *
 * Pickle is data, never code (STYLE.md §10). The unpickler is our own, not a general one: it knows the
 * protocol 2–5 opcodes torch.save's pickles use (CPython Lib/pickletools.py is the reference for each
 * opcode's arguments), keeps every value as inert data, and "calls" only the allow-listed globals below,
 * each of which it interprets itself (torch/_utils.py `_rebuild_tensor_v2`, `_rebuild_parameter`). Any
 * other GLOBAL is refused by name before anything else happens. It never recurses, and bounds what a
 * hostile pickle can make it allocate (MAX_* below); malformed pickles give MALFORMED PolyquantErrors.
 *
 * pickleparser (npm) was not used: it resolves unknown globals to placeholders unless subclassed, lets
 * BUILD Object.assign attacker state onto any value (our registered functions included) and REDUCE spread
 * any array into them, returns `undefined` for unknown memo keys, decodes LONG1 as unsigned and writes to
 * console.warn on large integers — each fixable, but the wrapper would be larger than this parser.
 */
import { ERROR_CODES, PolyquantError, malformed } from '../errors.js';
import { DTYPE_NAMES, DTYPES, type DType } from '../tensor/dtype.js';

/** A storage as a persistent id names it: `('storage', torch.HalfStorage, key, location, numel)`. */
export interface TorchStorageRef {
  readonly dtype: DType;
  /** Record name under `<prefix>data/`. */
  readonly key: string;
  /** Device the storage was saved from (`cpu`, `cuda:0`); the bytes are the same either way. */
  readonly location: string;
  /** Elements (not bytes) in the storage. */
  readonly numel: number;
}

/** One entry of a state dict: `_rebuild_tensor_v2(storage, storage_offset, size, stride, …)`. */
export interface PickledTensor {
  readonly name: string;
  readonly storage: TorchStorageRef;
  /** In elements. */
  readonly storageOffset: number;
  readonly shape: readonly number[];
  /** In elements. */
  readonly stride: readonly number[];
}

// Limits. Each bounds what a hostile data.pkl can make us allocate or do.
/** torch's pickle nests MARKs three deep (dict items → rebuild args → persistent id). */
export const MAX_PICKLE_MARK_DEPTH = 64;
/** torch.save writes ~6 tuples/dicts per tensor; 2M is ~330k tensors (polyglot-ko-3.8b has 390). */
export const MAX_PICKLE_CONTAINERS = 2_000_000;
/** GLOBAL's module and name lines; the longest torch name is ~40 bytes. */
const MAX_GLOBAL_LINE_BYTES = 256;
/** LONG1/LONG4 integers wider than 64 bits cannot be sizes, strides or offsets. */
const MAX_LONG_BYTES = 8;
/** The highest pickle protocol (Python 3.8+). */
const MAX_PICKLE_PROTOCOL = 5;

/** What each allow-listed global is, to our interpreter. */
type GlobalRole = 'ordered-dict' | 'rebuild-tensor' | 'rebuild-parameter' | 'rebuild-parameter-with-state' | 'storage';

/**
 * The only globals a torch state dict pickle may name (torch/serialization.py `_save`; torch/_utils.py),
 * storage classes derived from the dtype table. Everything else is refused by name.
 */
export const ALLOWED_PICKLE_GLOBALS: ReadonlyMap<string, { readonly role: GlobalRole; readonly dtype?: DType }> =
  new Map<string, { readonly role: GlobalRole; readonly dtype?: DType }>([
    ['collections.OrderedDict', { role: 'ordered-dict' }],
    ['torch._utils._rebuild_tensor_v2', { role: 'rebuild-tensor' }],
    ['torch._utils._rebuild_parameter', { role: 'rebuild-parameter' }],
    ['torch._utils._rebuild_parameter_with_state', { role: 'rebuild-parameter-with-state' }],
    ...DTYPE_NAMES.map((dtype) => [`torch.${DTYPES[dtype].torchStorage}`, { role: 'storage' as const, dtype }] as const),
  ]);

/** Opcodes (CPython Lib/pickletools.py `opcodes`): the ones we interpret … */
const OP = {
  MARK: 0x28, // (
  STOP: 0x2e, // .
  POP: 0x30, // 0
  POP_MARK: 0x31, // 1
  DUP: 0x32, // 2
  BINFLOAT: 0x47, // G
  BININT: 0x4a, // J
  BININT1: 0x4b, // K
  BININT2: 0x4d, // M
  NONE: 0x4e, // N
  BINPERSID: 0x51, // Q
  REDUCE: 0x52, // R
  BINUNICODE: 0x58, // X
  BINBYTES: 0x42, // B
  SHORT_BINBYTES: 0x43, // C
  EMPTY_LIST: 0x5d, // ]
  APPEND: 0x61, // a
  BUILD: 0x62, // b
  GLOBAL: 0x63, // c
  DICT: 0x64, // d
  APPENDS: 0x65, // e
  BINGET: 0x68, // h
  INST: 0x69, // i
  LONG_BINGET: 0x6a, // j
  LIST: 0x6c, // l
  BINPUT: 0x71, // q
  LONG_BINPUT: 0x72, // r
  SETITEM: 0x73, // s
  TUPLE: 0x74, // t
  SETITEMS: 0x75, // u
  EMPTY_DICT: 0x7d, // }
  EMPTY_TUPLE: 0x29, // )
  PROTO: 0x80,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  LONG1: 0x8a,
  LONG4: 0x8b,
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE8: 0x8d,
  BINBYTES8: 0x8e,
  STACK_GLOBAL: 0x93,
  MEMOIZE: 0x94,
  FRAME: 0x95,
} as const;

/** … and the ones torch.save never writes, refused as UNSUPPORTED by name. */
const UNSUPPORTED_OPCODES: ReadonlyMap<number, string> = new Map([
  [0x49, 'INT'],
  [0x4c, 'LONG'],
  [0x46, 'FLOAT'],
  [0x53, 'STRING'],
  [0x54, 'BINSTRING'],
  [0x55, 'SHORT_BINSTRING'],
  [0x56, 'UNICODE'],
  [0x50, 'PERSID'],
  [0x6f, 'OBJ'],
  [0x81, 'NEWOBJ'],
  [0x92, 'NEWOBJ_EX'],
  [0x67, 'GET'],
  [0x70, 'PUT'],
  [0x82, 'EXT1'],
  [0x83, 'EXT2'],
  [0x84, 'EXT4'],
  [0x8f, 'EMPTY_SET'],
  [0x90, 'ADDITEMS'],
  [0x91, 'FROZENSET'],
  [0x96, 'BYTEARRAY8'],
  [0x97, 'NEXT_BUFFER'],
  [0x98, 'READONLY_BUFFER'],
]);

// Inert values. Primitives stand for themselves; containers and torch objects are these classes.
class PickleTuple {
  constructor(readonly items: readonly Value[]) {}
}
class PickleList {
  readonly items: Value[] = [];
}
class PickleDict {
  readonly entries = new Map<DictKey, Value>();
}
class PickleGlobal {
  constructor(
    readonly name: string,
    readonly role: GlobalRole,
    readonly dtype: DType | undefined,
  ) {}
}
class PickleStorage {
  constructor(readonly ref: TorchStorageRef) {}
}
class PickleTensor {
  constructor(
    readonly storage: TorchStorageRef,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {}
}
type DictKey = string | number | bigint | boolean | null;
type Value = DictKey | Uint8Array | PickleTuple | PickleList | PickleDict | PickleGlobal | PickleStorage | PickleTensor;

function describe(value: Value): string {
  if (value === null) return 'None';
  if (typeof value === 'boolean') return 'bool';
  if (typeof value === 'number' || typeof value === 'bigint') return 'number';
  if (typeof value === 'string') return 'str';
  if (value instanceof Uint8Array) return 'bytes';
  if (value instanceof PickleTuple) return `tuple of ${value.items.length}`;
  if (value instanceof PickleList) return 'list';
  if (value instanceof PickleDict) return 'dict';
  if (value instanceof PickleGlobal) return value.name;
  if (value instanceof PickleStorage) return 'storage';
  return 'tensor';
}

/** A name from the pickle, made safe to print: printable ASCII, bounded length. */
function printable(text: string): string {
  const clipped = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  return clipped.replace(/[^\x20-\x7e…]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

class Unpickler {
  private at = 0;
  /** Where the opcode being run starts, for error messages. */
  private opcodeAt = 0;
  private stack: Value[] = [];
  private readonly marks: Value[][] = [];
  private readonly memo = new Map<number, Value>();
  private containers = 0;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly file: string,
    private readonly where: string,
  ) {}

  private fail(detail: string): PolyquantError {
    return malformed(this.file, `${this.where}: ${detail} (pickle byte ${this.opcodeAt})`);
  }

  private take(count: number): number {
    if (count > this.bytes.length - this.at) {
      throw this.fail(`the pickle ends inside an opcode that needs ${count} more bytes`);
    }
    const start = this.at;
    this.at += count;
    return start;
  }

  private u8(): number {
    return this.bytes[this.take(1)]!;
  }

  private u16(): number {
    const at = this.take(2);
    return this.bytes[at]! | (this.bytes[at + 1]! << 8);
  }

  private u32(): number {
    const at = this.take(4);
    return (this.bytes[at]! | (this.bytes[at + 1]! << 8) | (this.bytes[at + 2]! << 16)) + this.bytes[at + 3]! * 2 ** 24;
  }

  private i32(): number {
    const value = this.u32();
    return value >= 2 ** 31 ? value - 2 ** 32 : value;
  }

  /** A 64-bit length; anything past the end of the pickle is reported as such, not converted. */
  private u64Length(): number {
    const low = this.u32();
    const high = this.u32();
    if (high !== 0 || low > this.bytes.length - this.at) throw this.fail('a length runs past the end of the pickle');
    return low;
  }

  private slice(length: number): Uint8Array {
    const at = this.take(length);
    return this.bytes.slice(at, at + length);
  }

  private text(length: number): string {
    const at = this.take(length);
    try {
      return utf8.decode(this.bytes.subarray(at, at + length));
    } catch {
      throw this.fail('a string is not valid UTF-8');
    }
  }

  /** A newline-terminated GLOBAL/INST argument. */
  private line(): string {
    const end = Math.min(this.bytes.length, this.at + MAX_GLOBAL_LINE_BYTES + 1);
    for (let index = this.at; index < end; index++) {
      if (this.bytes[index] === 0x0a) {
        const text = this.text(index - this.at);
        this.at += 1;
        return text;
      }
    }
    throw this.fail(`a GLOBAL name has no newline within ${MAX_GLOBAL_LINE_BYTES} bytes`);
  }

  private push(value: Value): void {
    this.stack.push(value);
  }

  private pop(): Value {
    if (this.stack.length === 0) throw this.fail('the pickle pops from an empty stack');
    return this.stack.pop()!;
  }

  private top(): Value {
    if (this.stack.length === 0) throw this.fail('the pickle uses the top of an empty stack');
    return this.stack[this.stack.length - 1]!;
  }

  private popMark(): Value[] {
    const outer = this.marks.pop();
    if (outer === undefined) throw this.fail('the pickle closes a MARK it never opened');
    const items = this.stack;
    this.stack = outer;
    return items;
  }

  private countContainer(): void {
    this.containers += 1;
    if (this.containers > MAX_PICKLE_CONTAINERS) {
      throw new PolyquantError(
        ERROR_CODES.LIMIT,
        `${this.where}: the pickle builds more than ${MAX_PICKLE_CONTAINERS} tuples, lists and dicts`,
        { file: this.file },
      );
    }
  }

  private integer(bytes: Uint8Array): number | bigint {
    // LONG1/LONG4: little-endian two's complement, empty meaning 0 (pickletools `decode_long`).
    if (bytes.length === 0) return 0;
    let value = 0n;
    for (let index = bytes.length - 1; index >= 0; index--) value = (value << 8n) | BigInt(bytes[index]!);
    if (bytes[bytes.length - 1]! & 0x80) value -= 1n << BigInt(bytes.length * 8);
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  }

  private resolveGlobal(module: string, name: string): PickleGlobal {
    const qualified = `${module}.${name}`;
    const allowed = ALLOWED_PICKLE_GLOBALS.get(qualified);
    if (allowed !== undefined) return new PickleGlobal(qualified, allowed.role, allowed.dtype);
    if (module === 'torch' && /^[A-Za-z0-9_]+Storage$/.test(name)) {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `tensor storage type torch.${printable(name)} is not supported`, {
        file: this.file,
        hint: `supported: ${DTYPE_NAMES.map((dtype) => DTYPES[dtype].torchStorage).join(', ')}`,
      });
    }
    throw new PolyquantError(ERROR_CODES.UNSAFE, `refusing pickle GLOBAL ${printable(module)}.${printable(name)}`, {
      file: this.file,
      hint: 'a torch state dict pickle names only OrderedDict, the tensor rebuild functions and storage types; nothing in it is ever run',
    });
  }

  private persistentId(pid: Value): PickleStorage {
    // torch/serialization.py `_save` persistent_id: ('storage', storage_type, key, location, numel).
    if (!(pid instanceof PickleTuple) || pid.items.length !== 5 || pid.items[0] !== 'storage') {
      throw this.fail(`a persistent id (${describe(pid)}) is not a torch storage reference`);
    }
    const [, type, key, location, numel] = pid.items;
    if (!(type instanceof PickleGlobal) || type.role !== 'storage' || type.dtype === undefined) {
      throw this.fail(`a storage reference names ${describe(type ?? null)} instead of a storage type`);
    }
    if (typeof key !== 'string' || typeof location !== 'string') {
      throw this.fail('a storage reference has a key or location that is not a string');
    }
    if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) {
      throw this.fail(`storage ${JSON.stringify(printable(key))} has an invalid element count`);
    }
    return new PickleStorage({ dtype: type.dtype, key, location, numel });
  }

  private integers(value: Value | undefined, what: string): number[] {
    if (!(value instanceof PickleTuple)) throw this.fail(`_rebuild_tensor_v2: ${what} is not a tuple`);
    return value.items.map((item) => {
      if (typeof item === 'bigint') {
        throw new PolyquantError(ERROR_CODES.LIMIT, `${this.where}: tensor ${what} ${item} is larger than 2^53`, {
          file: this.file,
        });
      }
      if (typeof item !== 'number' || !Number.isSafeInteger(item)) {
        throw this.fail(`_rebuild_tensor_v2: ${what} holds a ${describe(item)}, not an integer`);
      }
      return item;
    });
  }

  private call(callable: Value, args: Value): Value {
    if (!(callable instanceof PickleGlobal)) throw this.fail(`REDUCE calls a ${describe(callable)}`);
    if (!(args instanceof PickleTuple)) throw this.fail(`REDUCE passes a ${describe(args)} as arguments`);
    const items = args.items;
    switch (callable.role) {
      case 'ordered-dict':
        if (items.length !== 0) throw this.fail('OrderedDict is called with arguments');
        this.countContainer();
        return new PickleDict();
      case 'rebuild-tensor': {
        // torch/_utils.py: _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
        // backward_hooks, metadata=None). Hooks and metadata are dropped: they do not change the bytes.
        const [storage, offset, size, stride, requiresGrad, hooks] = items;
        if (items.length < 6 || items.length > 7) {
          throw this.fail(`_rebuild_tensor_v2 takes 6 or 7 arguments, got ${items.length}`);
        }
        if (!(storage instanceof PickleStorage)) throw this.fail('_rebuild_tensor_v2: the first argument is not a storage');
        if (typeof offset !== 'number' || !Number.isSafeInteger(offset)) {
          throw this.fail('_rebuild_tensor_v2: the storage offset is not an integer');
        }
        if (typeof requiresGrad !== 'boolean' || !(hooks instanceof PickleDict)) {
          throw this.fail('_rebuild_tensor_v2: requires_grad or backward_hooks has the wrong type');
        }
        return new PickleTensor(storage.ref, offset, this.integers(size, 'size'), this.integers(stride, 'stride'));
      }
      case 'rebuild-parameter':
      case 'rebuild-parameter-with-state': {
        // _rebuild_parameter(data, requires_grad, backward_hooks[, state]): the parameter is its data.
        const expected = callable.role === 'rebuild-parameter' ? 3 : 4;
        const [data, requiresGrad, hooks] = items;
        if (items.length !== expected || !(data instanceof PickleTensor)) {
          throw this.fail(`${callable.name} takes a tensor and ${expected - 1} more arguments`);
        }
        if (typeof requiresGrad !== 'boolean' || !(hooks instanceof PickleDict)) {
          throw this.fail(`${callable.name}: requires_grad or backward_hooks has the wrong type`);
        }
        return data;
      }
      case 'storage':
        throw this.fail(`${callable.name} is called; storages may only appear in persistent ids`);
    }
  }

  private setItems(target: Value, items: readonly Value[]): void {
    if (!(target instanceof PickleDict)) throw this.fail(`SETITEM(S) on a ${describe(target)}`);
    if (items.length % 2 !== 0) throw this.fail('SETITEMS has a key without a value');
    for (let index = 0; index < items.length; index += 2) {
      const key = items[index]!;
      if (key !== null && typeof key === 'object') throw this.fail(`a dict key is a ${describe(key)}`);
      target.entries.set(key, items[index + 1]!);
    }
  }

  run(): Value {
    const bytes = this.bytes;
    while (this.at < bytes.length) {
      this.opcodeAt = this.at;
      const opcode = bytes[this.at++]!;
      switch (opcode) {
        case OP.PROTO: {
          const version = this.u8();
          if (version > MAX_PICKLE_PROTOCOL) {
            throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `${this.where}: pickle protocol ${version} is not supported`, {
              file: this.file,
            });
          }
          break;
        }
        case OP.FRAME:
          // Protocol 4 framing only groups opcodes for buffered reading; the length is checked and ignored.
          this.u64Length();
          break;
        case OP.STOP: {
          if (this.marks.length !== 0 || this.stack.length !== 1) {
            throw this.fail(`STOP with ${this.stack.length} values and ${this.marks.length} open MARKs on the stack`);
          }
          if (this.at !== bytes.length) throw this.fail(`${bytes.length - this.at} bytes follow STOP`);
          return this.stack[0]!;
        }
        case OP.MARK:
          if (this.marks.length >= MAX_PICKLE_MARK_DEPTH) {
            throw new PolyquantError(
              ERROR_CODES.LIMIT,
              `${this.where}: the pickle nests MARKs deeper than ${MAX_PICKLE_MARK_DEPTH}`,
              { file: this.file },
            );
          }
          this.marks.push(this.stack);
          this.stack = [];
          break;
        case OP.POP:
          this.pop();
          break;
        case OP.POP_MARK:
          this.popMark();
          break;
        case OP.DUP:
          this.push(this.top());
          break;
        case OP.BINPUT:
          this.memo.set(this.u8(), this.top());
          break;
        case OP.LONG_BINPUT:
          this.memo.set(this.u32(), this.top());
          break;
        case OP.MEMOIZE:
          this.memo.set(this.memo.size, this.top());
          break;
        case OP.BINGET:
        case OP.LONG_BINGET: {
          const index = opcode === OP.BINGET ? this.u8() : this.u32();
          const value = this.memo.get(index);
          if (value === undefined) throw this.fail(`memo entry ${index} is read before it is written`);
          this.push(value);
          break;
        }
        case OP.NONE:
          this.push(null);
          break;
        case OP.NEWTRUE:
          this.push(true);
          break;
        case OP.NEWFALSE:
          this.push(false);
          break;
        case OP.BININT:
          this.push(this.i32());
          break;
        case OP.BININT1:
          this.push(this.u8());
          break;
        case OP.BININT2:
          this.push(this.u16());
          break;
        case OP.LONG1:
        case OP.LONG4: {
          const length = opcode === OP.LONG1 ? this.u8() : this.i32();
          if (length < 0) throw this.fail('LONG4 has a negative length');
          if (length > MAX_LONG_BYTES) {
            throw new PolyquantError(
              ERROR_CODES.LIMIT,
              `${this.where}: a ${length}-byte integer is wider than the ${MAX_LONG_BYTES} bytes a tensor field can use`,
              { file: this.file },
            );
          }
          this.push(this.integer(this.slice(length)));
          break;
        }
        case OP.BINFLOAT: {
          // Big-endian IEEE 754 double (pickletools `float8`).
          const at = this.take(8);
          this.push(new DataView(bytes.buffer, bytes.byteOffset + at, 8).getFloat64(0, false));
          break;
        }
        case OP.BINUNICODE:
          this.push(this.text(this.u32()));
          break;
        case OP.SHORT_BINUNICODE:
          this.push(this.text(this.u8()));
          break;
        case OP.BINUNICODE8:
          this.push(this.text(this.u64Length()));
          break;
        case OP.BINBYTES:
          this.push(this.slice(this.u32()));
          break;
        case OP.SHORT_BINBYTES:
          this.push(this.slice(this.u8()));
          break;
        case OP.BINBYTES8:
          this.push(this.slice(this.u64Length()));
          break;
        case OP.EMPTY_TUPLE:
          this.push(new PickleTuple([]));
          break;
        case OP.TUPLE:
          this.countContainer();
          this.push(new PickleTuple(this.popMark()));
          break;
        case OP.TUPLE1:
        case OP.TUPLE2:
        case OP.TUPLE3: {
          const count = opcode - OP.TUPLE1 + 1;
          if (this.stack.length < count) throw this.fail(`TUPLE${count} needs ${count} values on the stack`);
          this.countContainer();
          this.push(new PickleTuple(this.stack.splice(this.stack.length - count, count)));
          break;
        }
        case OP.EMPTY_LIST:
          this.countContainer();
          this.push(new PickleList());
          break;
        case OP.LIST: {
          this.countContainer();
          const list = new PickleList();
          for (const item of this.popMark()) list.items.push(item);
          this.push(list);
          break;
        }
        case OP.APPEND:
        case OP.APPENDS: {
          const items = opcode === OP.APPEND ? [this.pop()] : this.popMark();
          const list = this.top();
          if (!(list instanceof PickleList)) throw this.fail(`APPEND(S) on a ${describe(list)}`);
          for (const item of items) list.items.push(item);
          break;
        }
        case OP.EMPTY_DICT:
          this.countContainer();
          this.push(new PickleDict());
          break;
        case OP.DICT: {
          const items = this.popMark();
          this.countContainer();
          const dict = new PickleDict();
          this.setItems(dict, items);
          this.push(dict);
          break;
        }
        case OP.SETITEM: {
          const value = this.pop();
          const key = this.pop();
          this.setItems(this.top(), [key, value]);
          break;
        }
        case OP.SETITEMS: {
          const items = this.popMark();
          this.setItems(this.top(), items);
          break;
        }
        case OP.GLOBAL: {
          const module = this.line();
          const name = this.line();
          this.push(this.resolveGlobal(module, name));
          break;
        }
        case OP.STACK_GLOBAL: {
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') {
            throw this.fail('STACK_GLOBAL names are not strings');
          }
          this.push(this.resolveGlobal(module, name));
          break;
        }
        case OP.INST: {
          // INST builds an instance of an inline-named class; refuse it by name like GLOBAL.
          const module = this.line();
          const name = this.line();
          this.resolveGlobal(module, name);
          throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `${this.where}: pickle opcode INST is not supported`, {
            file: this.file,
          });
        }
        case OP.BINPERSID:
          this.push(this.persistentId(this.pop()));
          break;
        case OP.REDUCE: {
          const args = this.pop();
          const callable = this.pop();
          this.push(this.call(callable, args));
          break;
        }
        case OP.BUILD: {
          // torch pickles the state dict's `_metadata` attribute as BUILD state on the OrderedDict; it
          // records module versions and does not describe tensors, so it is dropped.
          this.pop();
          const target = this.top();
          if (!(target instanceof PickleDict)) throw this.fail(`BUILD on a ${describe(target)}`);
          break;
        }
        default: {
          const known = UNSUPPORTED_OPCODES.get(opcode);
          if (known !== undefined) {
            throw new PolyquantError(
              ERROR_CODES.UNSUPPORTED,
              `${this.where}: pickle opcode ${known} (byte ${this.opcodeAt}) is not used by torch.save and is not supported`,
              { file: this.file },
            );
          }
          throw this.fail(`unknown pickle opcode 0x${opcode.toString(16).padStart(2, '0')}`);
        }
      }
    }
    throw this.fail('the pickle ends without STOP');
  }
}

/**
 * Reads a torch state dict pickle (`data.pkl`): a dict or OrderedDict from names to tensors. Returns the
 * tensors in the dict's order. `file` is named in errors; `where` says which record (`archive/data.pkl`).
 */
export function unpickleStateDict(bytes: Uint8Array, file: string, where = 'data.pkl'): PickledTensor[] {
  const result = new Unpickler(bytes, file, where).run();
  if (!(result instanceof PickleDict)) {
    throw new PolyquantError(
      ERROR_CODES.UNSUPPORTED,
      `${where} holds a ${describe(result)}, not a state dict (a dict of tensors)`,
      { file, hint: 'save model.state_dict(), not the model or a training checkpoint' },
    );
  }
  const tensors: PickledTensor[] = [];
  for (const [name, value] of result.entries) {
    if (typeof name !== 'string') throw malformed(file, `${where}: a state dict key is a ${describe(name)}, not a name`);
    if (!(value instanceof PickleTensor)) {
      throw new PolyquantError(
        ERROR_CODES.UNSUPPORTED,
        `${where}: the value of ${JSON.stringify(printable(name))} is a ${describe(value)}, not a tensor`,
        { file, hint: 'polyquant reads state dicts of tensors; save model.state_dict()' },
      );
    }
    tensors.push({
      name,
      storage: value.storage,
      storageOffset: value.storageOffset,
      shape: value.shape,
      stride: value.stride,
    });
  }
  return tensors;
}

/** What the pickler needs to describe one tensor that owns its whole storage. */
export interface TensorToPickle {
  readonly name: string;
  readonly dtype: DType;
  /** The storage's record name under `data/`: torch uses `str(len(id_map))`, i.e. "0", "1", … */
  readonly storageKey: string;
  readonly shape: readonly number[];
}

/** torch's contiguous strides (c10 `contiguous_strides`: a dimension of size 0 counts as 1). */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let stride = 1;
  for (let dim = shape.length - 1; dim >= 0; dim--) {
    strides[dim] = stride;
    stride *= Math.max(shape[dim]!, 1);
  }
  return strides;
}

/** A growable byte buffer for the pickler. */
class ByteBuilder {
  private buffer = new Uint8Array(4096);
  length = 0;

  private reserve(count: number): void {
    if (this.length + count <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < this.length + count) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
  }

  byte(value: number): void {
    this.reserve(1);
    this.buffer[this.length++] = value;
  }

  bytes(values: Uint8Array): void {
    this.reserve(values.length);
    this.buffer.set(values, this.length);
    this.length += values.length;
  }

  u32(value: number): void {
    this.byte(value & 0xff);
    this.byte((value >>> 8) & 0xff);
    this.byte((value >>> 16) & 0xff);
    this.byte((value >>> 24) & 0xff);
  }

  done(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }
}

const encoder = new TextEncoder();
/** Python's pickler commits SETITEMS in batches of this many items (pickle.py `_BATCHSIZE`). */
const PICKLE_BATCH_SIZE = 1000;

/**
 * Emits the bytes CPython's C pickler writes at protocol 2 (Modules/_pickle.c): every string, tuple,
 * global and reduced object memoized with BINPUT/LONG_BINPUT in order, memo hits as BINGET/LONG_BINGET.
 * Only the values a state dict needs are supported.
 */
class Pickler {
  readonly out = new ByteBuilder();
  private memoSize = 0;
  /** Objects Python would find in its memo by identity: globals and interned constant strings. */
  private readonly memo = new Map<string, number>();

  private put(): number {
    const index = this.memoSize++;
    if (index < 256) {
      this.out.byte(OP.BINPUT);
      this.out.byte(index);
    } else {
      this.out.byte(OP.LONG_BINPUT);
      this.out.u32(index);
    }
    return index;
  }

  private get(index: number): void {
    if (index < 256) {
      this.out.byte(OP.BINGET);
      this.out.byte(index);
    } else {
      this.out.byte(OP.LONG_BINGET);
      this.out.u32(index);
    }
  }

  opcode(value: number): void {
    this.out.byte(value);
  }

  memoizeResult(): void {
    this.put();
  }

  global(module: string, name: string): void {
    const key = `global:${module}.${name}`;
    const known = this.memo.get(key);
    if (known !== undefined) {
      this.get(known);
      return;
    }
    this.out.byte(OP.GLOBAL);
    this.out.bytes(encoder.encode(`${module}\n${name}\n`));
    this.memo.set(key, this.put());
  }

  /** A fresh string object: BINUNICODE, memoized. */
  string(text: string): void {
    const encoded = encoder.encode(text);
    this.out.byte(OP.BINUNICODE);
    this.out.u32(encoded.length);
    this.out.bytes(encoded);
    this.put();
  }

  /** A string Python interns (a literal such as 'storage' or 'cpu'): written once, then fetched from the memo. */
  internedString(text: string): void {
    const key = `string:${text}`;
    const known = this.memo.get(key);
    if (known !== undefined) {
      this.get(known);
      return;
    }
    this.string(text);
    this.memo.set(key, this.memoSize - 1);
  }

  /** save_long: BININT1/BININT2/BININT when it fits 32 bits, else LONG1 with minimal two's complement. */
  integer(value: number): void {
    if (value >= 0 && value < 0x100) {
      this.out.byte(OP.BININT1);
      this.out.byte(value);
    } else if (value >= 0 && value < 0x10000) {
      this.out.byte(OP.BININT2);
      this.out.byte(value & 0xff);
      this.out.byte(value >>> 8);
    } else if (value >= -(2 ** 31) && value < 2 ** 31) {
      this.out.byte(OP.BININT);
      this.out.u32(value >>> 0);
    } else {
      let remaining = BigInt(value);
      const encoded: number[] = [];
      // pickle.encode_long: (bit_length >> 3) + 1 bytes, trimmed of a redundant 0xff sign byte.
      const bitLength = (remaining < 0n ? -remaining : remaining).toString(2).length;
      const byteCount = (bitLength >> 3) + 1;
      for (let index = 0; index < byteCount; index++) {
        encoded.push(Number(remaining & 0xffn));
        remaining >>= 8n;
      }
      if (value < 0 && encoded.length > 1 && encoded.at(-1) === 0xff && (encoded.at(-2)! & 0x80) !== 0) encoded.pop();
      this.out.byte(OP.LONG1);
      this.out.byte(encoded.length);
      this.out.bytes(Uint8Array.from(encoded));
    }
  }

  /** save_tuple at protocol 2: EMPTY_TUPLE (not memoized), TUPLE1–3, or MARK … TUPLE; then memoized. */
  integerTuple(values: readonly number[]): void {
    if (values.length === 0) {
      this.out.byte(OP.EMPTY_TUPLE);
      return;
    }
    if (values.length > 3) this.out.byte(OP.MARK);
    for (const value of values) this.integer(value);
    this.out.byte(values.length > 3 ? OP.TUPLE : OP.TUPLE1 + values.length - 1);
    this.put();
  }
}

/**
 * Writes the `data.pkl` torch.save(state_dict) writes (torch/serialization.py `_save`, protocol 2): an
 * OrderedDict (or, with `container: 'dict'`, a plain dict) whose values are
 * `_rebuild_tensor_v2(<persistent id ('storage', torch.XStorage, key, 'cpu', numel)>, 0, size, stride,
 * False, OrderedDict())`, each tensor owning its whole storage. Byte-identical to torch 1.13/2.x for the
 * same tensors in the same order (tested against a real torch.save file).
 */
export function pickleStateDict(
  tensors: readonly TensorToPickle[],
  container: 'OrderedDict' | 'dict' = 'OrderedDict',
): Uint8Array {
  const pickler = new Pickler();
  pickler.opcode(OP.PROTO);
  pickler.opcode(2);
  if (container === 'OrderedDict') {
    // save_reduce(OrderedDict, ()): GLOBAL, EMPTY_TUPLE, REDUCE, memoize.
    pickler.global('collections', 'OrderedDict');
    pickler.opcode(OP.EMPTY_TUPLE);
    pickler.opcode(OP.REDUCE);
  } else {
    pickler.opcode(OP.EMPTY_DICT);
  }
  pickler.memoizeResult();

  // _pickle.c batch_dict: MARK … SETITEMS per batch of up to 1000, a lone last item as SETITEM.
  for (let start = 0; start < tensors.length; start += PICKLE_BATCH_SIZE) {
    const batch = tensors.slice(start, start + PICKLE_BATCH_SIZE);
    if (batch.length > 1) pickler.opcode(OP.MARK);
    for (const tensor of batch) {
      pickler.string(tensor.name);
      pickler.global('torch._utils', '_rebuild_tensor_v2');
      pickler.opcode(OP.MARK);
      // The persistent id tuple, saved in place of the storage object.
      pickler.opcode(OP.MARK);
      pickler.internedString('storage');
      pickler.global('torch', DTYPES[tensor.dtype].torchStorage);
      pickler.string(tensor.storageKey);
      pickler.internedString('cpu');
      pickler.integer(tensor.shape.reduce((product, dim) => product * dim, 1));
      pickler.opcode(OP.TUPLE);
      pickler.memoizeResult();
      pickler.opcode(OP.BINPERSID);
      pickler.integer(0); // storage_offset
      pickler.integerTuple(tensor.shape);
      pickler.integerTuple(contiguousStrides(tensor.shape));
      pickler.opcode(OP.NEWFALSE); // requires_grad
      // backward_hooks: OrderedDict()
      pickler.global('collections', 'OrderedDict');
      pickler.opcode(OP.EMPTY_TUPLE);
      pickler.opcode(OP.REDUCE);
      pickler.memoizeResult();
      pickler.opcode(OP.TUPLE);
      pickler.memoizeResult();
      pickler.opcode(OP.REDUCE);
      pickler.memoizeResult();
    }
    pickler.opcode(batch.length > 1 ? OP.SETITEMS : OP.SETITEM);
  }
  pickler.opcode(OP.STOP);
  return pickler.out.done();
}
