import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { parseAllDocuments } from 'yaml';
import { describe, isObject, type Json } from './fields.js';
import type { Problem } from './problems.js';

/** The CRD, two levels above both src/model and dist/model (it ships with the package and the image). */
export const CRD_FILE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../crds/virtualservice.yaml');

type Schema = Record<string, unknown>;

/** The spec's schema as the CRD gives it (`openAPIV3Schema.properties.spec`). */
export function crdSpecSchema(file = CRD_FILE): Schema {
  for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
    const crd = doc.toJS() as Json | null;
    const versions = (crd?.['spec'] as Json | undefined)?.['versions'];
    if (!Array.isArray(versions)) continue;
    for (const v of versions as Json[]) {
      const schema = ((v['schema'] as Json | undefined)?.['openAPIV3Schema'] as Json | undefined)?.['properties'] as Json | undefined;
      if (schema?.['spec']) return schema['spec'] as Schema;
    }
  }
  throw new Error(`${file} has no openAPIV3Schema for spec`);
}

/** What the structure check keeps of the CRD's schema: the shape of the object, not the ranges of its values. */
const STRUCTURAL = new Set(['type', 'properties', 'required', 'items', 'additionalProperties', 'enum']);

/**
 * The CRD's spec schema reduced to structure (types, required fields, enums, lists, maps), with
 * unknown fields refused as the apiserver does under strict field validation. Value ranges,
 * name rules and the CEL rules are validate.ts's: its messages name the limits, and its limits
 * are tested against the CRD's (test/model-crd.test.ts), so both stay one set of rules.
 */
function structural(schema: Schema): Schema {
  const out: Schema = {};
  for (const [k, v] of Object.entries(schema)) {
    if (!STRUCTURAL.has(k)) continue;
    if (k === 'properties') out[k] = Object.fromEntries(Object.entries(v as Record<string, Schema>).map(([p, s]) => [p, structural(s)]));
    else if ((k === 'items' || k === 'additionalProperties') && isObject(v)) out[k] = structural(v);
    else out[k] = v;
  }
  if (out['type'] === 'object' && out['properties'] && out['additionalProperties'] === undefined) out['additionalProperties'] = false;
  return out;
}

let compiled: ValidateFunction | undefined;

function specValidator(): ValidateFunction {
  if (!compiled) {
    const ajv = new Ajv({ allErrors: true, strict: true, verbose: true });
    const schema = structural(crdSpecSchema());
    // An absent selector reads as an empty one, which validate.ts rejects with why.
    schema['required'] = ((schema['required'] as string[] | undefined) ?? []).filter((k) => k !== 'selector');
    compiled = ajv.compile(schema);
  }
  return compiled;
}

/**
 * The problems the CRD's schema finds in the structure of a spec, at paths such as
 * `spec.listeners[0].udp.port`. Give it the spec `withoutNulls`: absent and null are the same
 * (YAML writes an empty field as null; the apiserver prunes nulls of fields that are not nullable).
 */
export function specStructureProblems(spec: unknown): Problem[] {
  const validate = specValidator();
  if (validate(spec)) return [];
  return (validate.errors ?? []).map(problemOf);
}

/** A copy without null values, which read as absent (see specStructureProblems). */
export function withoutNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutNulls);
  if (!isObject(v)) return v;
  const out: Json = {};
  for (const [k, x] of Object.entries(v)) if (x !== null && x !== undefined) out[k] = withoutNulls(x);
  return out;
}

/** `/listeners/0/udp/port` → `spec.listeners[0].udp.port`. */
function pathOf(instancePath: string): string {
  let out = 'spec';
  for (const raw of instancePath.split('/').slice(1)) {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(segment) ? `[${segment}]` : `.${segment}`;
  }
  return out;
}

const TYPE_MESSAGES: Readonly<Record<string, string>> = {
  string: 'must be a string',
  integer: 'must be an integer',
  number: 'must be a number',
  boolean: 'must be true or false',
  array: 'must be a list',
  object: 'must be an object',
};

function problemOf(e: ErrorObject): Problem {
  const at = pathOf(e.instancePath);
  const schema = e.parentSchema as Schema | undefined;
  switch (e.keyword) {
    case 'required': {
      const missing = (e.params as { missingProperty: string }).missingProperty;
      const values = ((schema?.['properties'] as Record<string, Schema> | undefined)?.[missing]?.['enum'] as string[] | undefined) ?? undefined;
      return { path: `${at}.${missing}`, message: values ? `is required (one of ${values.join(', ')})` : 'is required' };
    }
    case 'additionalProperties':
      return { path: at, message: `unknown field "${(e.params as { additionalProperty: string }).additionalProperty}"` };
    case 'type': {
      const type = (e.params as { type: string }).type;
      const isMap = type === 'object' && isObject(schema?.['additionalProperties']);
      return { path: at, message: `${isMap ? 'must be a map of strings' : (TYPE_MESSAGES[type] ?? `must be ${type}`)}, got ${describe(e.data)}` };
    }
    case 'enum':
      return { path: at, message: `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')}, got ${describe(e.data)}` };
    default:
      return { path: at, message: e.message ?? `fails the CRD's ${e.keyword} rule` };
  }
}
