import protobuf from 'protobufjs';
import { typeForUrl } from './protos.js';

/** An object that does not fit the proto it is meant for. */
export class ResourceEncodingError extends Error {
  override name = 'ResourceEncodingError';
}

/**
 * Encodes a resource given as a plain object in proto field names (snake_case, as in Envoy's
 * docs; `google.protobuf.Any` as `{ '@type': url, ...fields }`). protobufjs silently drops
 * unknown fields, which would turn a typo into missing configuration, so unknown and
 * mistyped fields are rejected first, with the path that names them.
 */
export function encodeResource(typeUrl: string, object: unknown): Uint8Array {
  const type = typeForUrl(typeUrl);
  if (!type) throw new ResourceEncodingError(`unknown resource type ${typeUrl}`);
  checkFields(type, object, type.name);
  return type.encode(type.fromObject(object as Record<string, unknown>)).finish();
}

function checkFields(type: protobuf.Type, object: unknown, where: string): void {
  if (object === null || typeof object !== 'object' || Array.isArray(object)) {
    throw new ResourceEncodingError(`${where}: expected an object for ${type.fullName.slice(1)}`);
  }
  if (isAny(type) && '@type' in object) {
    const url = (object as Record<string, unknown>)['@type'];
    const inner = typeof url === 'string' ? typeForUrl(url) : undefined;
    if (!inner) throw new ResourceEncodingError(`${where}: unknown @type ${String(url)}`);
    const { ['@type']: _ignored, ...rest } = object as Record<string, unknown>;
    checkFields(inner, rest, `${where}(${inner.name})`);
    return;
  }
  for (const [key, value] of Object.entries(object)) {
    const field = type.fields[key];
    if (!field) throw new ResourceEncodingError(`${where}: unknown field "${key}" in ${type.fullName.slice(1)}`);
    if (value === undefined || value === null) continue;
    field.resolve();
    const fieldType = field.resolvedType;
    const path = `${where}.${key}`;
    if (!(fieldType instanceof protobuf.Type)) {
      const values = field.map ? Object.values(value as object) : field.repeated ? asList(value, path) : [value];
      for (const v of values) checkScalar(field, fieldType, v, path);
      continue;
    }
    if (field.map) {
      for (const [k, v] of Object.entries(value as object)) checkFields(fieldType, v, `${path}[${k}]`);
    } else if (field.repeated) {
      asList(value, path).forEach((v, i) => checkFields(fieldType, v, `${path}[${i}]`));
    } else {
      checkFields(fieldType, value, path);
    }
  }
}

// protobufjs computes `fullName` on every read (walking the parent chain and joining), and this
// test runs for every nested object of every resource encoded: answer it once per Type.
const anyByType = new WeakMap<protobuf.Type, boolean>();

function isAny(type: protobuf.Type): boolean {
  let any = anyByType.get(type);
  if (any === undefined) anyByType.set(type, (any = type.fullName === '.google.protobuf.Any'));
  return any;
}

function asList(value: unknown, path: string): unknown[] {
  if (!Array.isArray(value)) throw new ResourceEncodingError(`${path}: expected a list`);
  return value;
}

const NUMERIC = new Set(['double', 'float', 'int32', 'uint32', 'sint32', 'fixed32', 'sfixed32', 'int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);

function checkScalar(field: protobuf.Field, enumType: protobuf.Enum | null, value: unknown, path: string): void {
  let ok: boolean;
  if (enumType) {
    ok = typeof value === 'number' ? Number.isInteger(value) : typeof value === 'string' && value in enumType.values;
  } else if (NUMERIC.has(field.type)) {
    ok = (typeof value === 'number' && Number.isFinite(value)) || (typeof value === 'string' && /^-?\d+(\.\d+)?$/.test(value));
  } else if (field.type === 'bool') {
    ok = typeof value === 'boolean';
  } else if (field.type === 'string') {
    ok = typeof value === 'string';
  } else {
    ok = typeof value === 'string' || value instanceof Uint8Array;
  }
  if (!ok) throw new ResourceEncodingError(`${path}: ${JSON.stringify(value)} is not a valid ${enumType ? enumType.name : field.type}`);
}

export function decodeResource(typeUrl: string, bytes: Uint8Array, options: protobuf.IConversionOptions): Record<string, unknown> {
  const type = typeForUrl(typeUrl);
  if (!type) throw new ResourceEncodingError(`unknown resource type ${typeUrl}`);
  return type.toObject(type.decode(bytes), options);
}
