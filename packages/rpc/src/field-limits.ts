/**
 * Bounded request fields (issue 17): every string field of every request message has a maximum
 * length, every repeated and map field a maximum number of entries — the field's
 * `(keyshard.v1.field)` option (proto/keyshard/v1/options.proto FieldLimits) or the defaults
 * below — checked here, in one place, on the decoded request before any handler runs
 * (unaryService, server.ts), nested messages, repeated elements and map keys and values included.
 * So no domain code ever sees, stores, logs or echoes a megabyte where an id belongs.
 *
 * The options are read with protobufjs from the same .proto files as everything else
 * (@grpc/proto-loader drops custom field options from its descriptors). A malformed option (an
 * unknown member, a zero, max_key_length on a non-map, …) fails the loading, so a service with
 * one does not start (field-limits.spec.ts loads every request type of every service).
 *
 * A refusal is INVALID_ARGUMENT with reason FIELD_TOO_LONG or TOO_MANY_ENTRIES; its message and
 * ErrorInfo metadata name the field path (`items[2].context`, a map entry by its position:
 * `policy.grants[#0].principals`) and the limit, never the value nor a map key.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import protobuf from 'protobufjs';
import { KeyshardError } from '@keyshard/errors';
import { PROTO_FILES, PROTO_ROOT, type ServiceName } from './proto.ts';

/** A string field without its own max_length: at most this many characters. */
export const DEFAULT_MAX_LENGTH = 256;
/** A repeated or map field without its own max_count: at most this many entries. */
export const DEFAULT_MAX_COUNT = 256;

/** The option's name as protobufjs flattens it into a field's options (`(keyshard.v1.field).max_length`). */
const OPTION = '(keyshard.v1.field)';
const MEMBERS = ['max_length', 'max_key_length', 'max_count'] as const;
type Member = (typeof MEMBERS)[number];

/** What one field of a message allows (the defaults filled in; only what applies to its kind). */
export interface FieldLimit {
  /** Field name in the proto. */
  readonly name: string;
  readonly kind: 'string' | 'message' | 'other';
  readonly repeated: boolean;
  readonly map: boolean;
  /** A string, each string element, or each string map value. */
  readonly maxLength?: number;
  /** Each map key (string keys). */
  readonly maxKeyLength?: number;
  /** Entries of a repeated or map field. */
  readonly maxCount?: number;
  /** The message type of a message field, repeated element or map value. */
  readonly messageType?: string;
}

/** The first limit a value breaks, its path relative to the message checked. */
interface Violation {
  path: string;
  part?: 'key' | 'value';
  length?: number;
  maxLength?: number;
  count?: number;
  maxCount?: number;
}

type Checker = (message: Record<string, unknown>) => Violation | undefined;

let root: protobuf.Root | undefined;

/** .proto `files` under `dir` as protobufjs reads them (field names as written, like LOADER_OPTIONS' keepCase); exported for the spec. */
export function loadProtoRoot(dir: string, files: readonly string[]): protobuf.Root {
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => {
    if (path.isAbsolute(target)) return target;
    const full = path.join(dir, target);
    return existsSync(full) ? full : target; // google/protobuf/*: protobufjs's bundled copies
  };
  r.loadSync([...files], { keepCase: true });
  r.resolveAll();
  return r;
}

/** The keyshard.v1 protos, loaded once. */
const protoRoot = (): protobuf.Root => (root ??= loadProtoRoot(PROTO_ROOT, PROTO_FILES));

function positive(where: string, member: Member, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new Error(`${where}: ${OPTION}.${member} is ${JSON.stringify(v)}, not a positive integer`);
  return v;
}

/** One field's limits from its options; throws on an option that is malformed or does not apply to the field. Exported for the spec. */
export function limitOf(type: protobuf.Type, field: protobuf.Field): FieldLimit {
  const where = `${type.fullName.replace(/^\./, '')}.${field.name}`;
  const set: Partial<Record<Member, number>> = {};
  for (const [k, v] of Object.entries(field.options ?? {})) {
    if (!k.startsWith(OPTION)) continue;
    const member = k.slice(OPTION.length + 1) as Member;
    if (!MEMBERS.includes(member)) throw new Error(`${where}: ${k} is not a member of keyshard.v1.FieldLimits (${MEMBERS.join(', ')})`);
    set[member] = positive(where, member, v);
  }
  const map = field instanceof protobuf.MapField;
  const repeated = field.repeated;
  const kind = field.resolvedType instanceof protobuf.Type ? 'message' : field.type === 'string' ? 'string' : 'other';
  const keyIsString = map && (field as protobuf.MapField).keyType === 'string';
  if (set.max_length !== undefined && kind !== 'string') throw new Error(`${where}: ${OPTION}.max_length on a field whose ${map ? 'values are' : 'type is'} not string`);
  if (set.max_key_length !== undefined && !keyIsString) throw new Error(`${where}: ${OPTION}.max_key_length on a field that is not a map with string keys`);
  if (set.max_count !== undefined && !repeated && !map) throw new Error(`${where}: ${OPTION}.max_count on a field that is neither repeated nor a map`);
  return {
    name: field.name,
    kind,
    repeated: repeated && !map,
    map,
    ...(kind === 'string' ? { maxLength: set.max_length ?? DEFAULT_MAX_LENGTH } : {}),
    ...(keyIsString ? { maxKeyLength: set.max_key_length ?? DEFAULT_MAX_LENGTH } : {}),
    ...(repeated || map ? { maxCount: set.max_count ?? DEFAULT_MAX_COUNT } : {}),
    ...(kind === 'message' ? { messageType: (field.resolvedType as protobuf.Type).fullName.replace(/^\./, '') } : {}),
  };
}

const limitsCache = new Map<string, readonly FieldLimit[]>();

/** The limits of every field of message type `typeName` (e.g. 'keyshard.v1.EncryptRequest'); throws on a malformed option. */
export function fieldLimits(typeName: string): readonly FieldLimit[] {
  let limits = limitsCache.get(typeName);
  if (!limits) {
    const type = protoRoot().lookupType(typeName);
    limits = Object.freeze(type.fieldsArray.map((f) => Object.freeze(limitOf(type, f))));
    limitsCache.set(typeName, limits);
  }
  return limits;
}

const at = (name: string, inner: Violation): Violation => ({ ...inner, path: `${name}${inner.path.startsWith('[') || inner.path === '' ? '' : '.'}${inner.path}` });

const checkers = new Map<string, Checker | null>();

/**
 * The checker of a message type, or null if nothing in it (transitively) is bounded. Built once
 * per type; checking allocates nothing unless a limit is broken. Recursive types are checked as
 * deep as the message goes (a decoded message is finite).
 */
function checkerOf(typeName: string): Checker | null {
  if (checkers.has(typeName)) return checkers.get(typeName)!;
  // A placeholder while this type's fields are compiled: a recursive reference calls through it.
  let self: Checker | null = null;
  checkers.set(typeName, (m) => self?.(m));
  const steps: Checker[] = [];
  for (const f of fieldLimits(typeName)) {
    const nested = f.messageType ? checkerOf(f.messageType) : null;
    const name = f.name;
    if (f.map) {
      const maxCount = f.maxCount!;
      const maxKey = f.maxKeyLength;
      const maxValue = f.maxLength;
      steps.push((m) => {
        const v = m[name] as Record<string, unknown> | null | undefined;
        if (!v) return undefined;
        let n = 0;
        for (const k in v) {
          if (maxKey !== undefined && k.length > maxKey) return { path: name, part: 'key', length: k.length, maxLength: maxKey };
          const value = v[k];
          if (maxValue !== undefined && typeof value === 'string' && value.length > maxValue) return { path: name, part: 'value', length: value.length, maxLength: maxValue };
          if (nested && value && typeof value === 'object') {
            const inner = nested(value as Record<string, unknown>);
            if (inner) return at(`${name}[#${n}]`, inner);
          }
          if (++n > maxCount) return { path: name, count: Object.keys(v).length, maxCount };
        }
        return undefined;
      });
    } else if (f.repeated) {
      const maxCount = f.maxCount!;
      const maxLength = f.maxLength;
      steps.push((m) => {
        const v = m[name];
        if (!Array.isArray(v)) return undefined;
        if (v.length > maxCount) return { path: name, count: v.length, maxCount };
        if (maxLength !== undefined) {
          for (let i = 0; i < v.length; i++) {
            const s = v[i];
            if (typeof s === 'string' && s.length > maxLength) return { path: `${name}[${i}]`, length: s.length, maxLength };
          }
        } else if (nested) {
          for (let i = 0; i < v.length; i++) {
            const inner = v[i] && typeof v[i] === 'object' ? nested(v[i] as Record<string, unknown>) : undefined;
            if (inner) return at(`${name}[${i}]`, inner);
          }
        }
        return undefined;
      });
    } else if (f.maxLength !== undefined) {
      const maxLength = f.maxLength;
      steps.push((m) => {
        const s = m[name];
        return typeof s === 'string' && s.length > maxLength ? { path: name, length: s.length, maxLength } : undefined;
      });
    } else if (nested) {
      steps.push((m) => {
        const v = m[name];
        const inner = v && typeof v === 'object' ? nested(v as Record<string, unknown>) : undefined;
        return inner && at(name, inner);
      });
    }
  }
  self =
    steps.length === 0 ? null
    : (m) => {
        for (const step of steps) {
          const v = step(m);
          if (v) return v;
        }
        return undefined;
      };
  // A type that recursed into itself keeps the placeholder (it forwards to `self`); others get `self`.
  checkers.set(typeName, self);
  return self;
}

/** The refusal of a broken limit: names the field and the limit, never the value. */
function refusal(v: Violation): KeyshardError {
  if (v.count !== undefined)
    return new KeyshardError('INVALID_ARGUMENT', `${v.path} has ${v.count} entries; at most ${v.maxCount}`, {
      reason: 'TOO_MANY_ENTRIES',
      metadata: { field: v.path, max_count: String(v.maxCount) },
    });
  const what = v.part ? `a ${v.part} of ${v.path}` : v.path;
  return new KeyshardError('INVALID_ARGUMENT', `${what} is ${v.length} characters long; at most ${v.maxLength}`, {
    reason: 'FIELD_TOO_LONG',
    metadata: { field: v.path, max_length: String(v.maxLength), ...(v.part ? { part: v.part } : {}) },
  });
}

/** Throws the refusal (INVALID_ARGUMENT, FIELD_TOO_LONG / TOO_MANY_ENTRIES) if `message`, a decoded `typeName`, breaks a limit. */
export function checkFieldLimits(typeName: string, message: unknown): void {
  const check = checkerOf(typeName);
  const v = check && message && typeof message === 'object' ? check(message as Record<string, unknown>) : undefined;
  if (v) throw refusal(v);
}

/** The request message type of a method, from its gRPC path (`/keyshard.v1.KeyService/Encrypt`); undefined for other packages' services. */
export function requestTypeOf(grpcPath: string): string | undefined {
  const m = /^\/(keyshard\.v1\.\w+)\/(\w+)$/.exec(grpcPath);
  if (!m) return undefined;
  const method = protoRoot().lookupService(m[1]!).methods[m[2]!];
  if (!method) throw new Error(`${grpcPath} is not a method of the protos`);
  return method.resolvedRequestType!.fullName.replace(/^\./, '');
}

/**
 * The check of a method's request (by its gRPC path), built now so a malformed option fails at
 * start-up; undefined when nothing in the request is bounded or the method is not keyshard.v1's.
 */
export function requestLimitCheck(grpcPath: string): ((request: unknown) => void) | undefined {
  const type = requestTypeOf(grpcPath);
  if (!type || !checkerOf(type)) return undefined;
  return (request) => checkFieldLimits(type, request);
}

/** Every request type of a service's methods (the spec and the docs walk them). */
export function requestTypes(service: ServiceName): ReadonlyMap<string, string> {
  const s = protoRoot().lookupService(`keyshard.v1.${service}`);
  return new Map(Object.values(s.methods).map((m) => [m.name, m.resolvedRequestType!.fullName.replace(/^\./, '')]));
}
