import type { Problem } from './problems.js';

/** Readers for untyped JSON that record what is wrong, at which path, and carry on. */

export type Json = Record<string, unknown>;

export function isObject(v: unknown): v is Json {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export class FieldReader {
  readonly problems: Problem[] = [];

  add(path: string, message: string): void {
    this.problems.push({ path, message });
  }

  /** Absent and null are the same thing: YAML writes an empty field as null. */
  private present(obj: Json, key: string): unknown {
    const v = obj[key];
    return v === null ? undefined : v;
  }

  object(value: unknown, path: string): Json | undefined {
    if (isObject(value)) return value;
    this.add(path, value === undefined || value === null ? 'is required' : 'must be an object');
    return undefined;
  }

  /** Unknown fields are typos in a file; the apiserver would have refused them too. */
  onlyKeys(obj: Json, allowed: readonly string[], path: string): void {
    for (const k of Object.keys(obj)) if (!allowed.includes(k)) this.add(path, `unknown field "${k}"`);
  }

  string(obj: Json, key: string, path: string, required: true): string | undefined;
  string(obj: Json, key: string, path: string, required?: false): string | undefined;
  string(obj: Json, key: string, path: string, required = false): string | undefined {
    const v = this.present(obj, key);
    if (v === undefined) {
      if (required) this.add(`${path}.${key}`, 'is required');
      return undefined;
    }
    if (typeof v !== 'string') {
      this.add(`${path}.${key}`, `must be a string, got ${describe(v)}`);
      return undefined;
    }
    return v;
  }

  integer(obj: Json, key: string, path: string, required = false): number | undefined {
    const v = this.present(obj, key);
    if (v === undefined) {
      if (required) this.add(`${path}.${key}`, 'is required');
      return undefined;
    }
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      this.add(`${path}.${key}`, `must be an integer, got ${describe(v)}`);
      return undefined;
    }
    return v;
  }

  boolean(obj: Json, key: string, path: string): boolean | undefined {
    const v = this.present(obj, key);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') {
      this.add(`${path}.${key}`, `must be true or false, got ${describe(v)}`);
      return undefined;
    }
    return v;
  }

  oneOf<T extends string>(obj: Json, key: string, path: string, values: readonly T[], required: boolean): T | undefined {
    const v = this.present(obj, key);
    if (v === undefined) {
      if (required) this.add(`${path}.${key}`, `is required (one of ${values.join(', ')})`);
      return undefined;
    }
    if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) {
      this.add(`${path}.${key}`, `must be one of ${values.join(', ')}, got ${describe(v)}`);
      return undefined;
    }
    return v as T;
  }

  list(obj: Json, key: string, path: string, required: boolean): readonly unknown[] | undefined {
    const v = this.present(obj, key);
    if (v === undefined) {
      if (required) this.add(`${path}.${key}`, 'is required');
      return undefined;
    }
    if (!Array.isArray(v)) {
      this.add(`${path}.${key}`, `must be a list, got ${describe(v)}`);
      return undefined;
    }
    return v;
  }

  stringMap(obj: Json, key: string, path: string): Record<string, string> | undefined {
    const v = this.present(obj, key);
    if (v === undefined) return undefined;
    if (!isObject(v)) {
      this.add(`${path}.${key}`, `must be a map of strings, got ${describe(v)}`);
      return undefined;
    }
    const out: Record<string, string> = {};
    for (const [k, value] of Object.entries(v)) {
      if (typeof value === 'string') out[k] = value;
      else this.add(`${path}.${key}.${k}`, `must be a string, got ${describe(value)}`);
    }
    return out;
  }
}

export function describe(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}
