import { readFileSync } from 'node:fs';
import { Ajv, type ValidateFunction } from 'ajv';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { GROUP, KIND, PLURAL, VERSION, limits } from '../src/model/index.js';
import { HASH_EXCLUSIVE } from '../src/model/validate.js';

/**
 * The CRD is applied to a real apiserver elsewhere; these tests keep it in step with the model:
 * the examples pass its schema, the limits are the ones validation enforces, and it is structural.
 */

interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema;
  items?: Schema;
  required?: string[];
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
  maxProperties?: number;
  default?: unknown;
  'x-kubernetes-validations'?: { rule: string; message: string }[];
}

const crd = parse(readFileSync(new URL('../crds/virtualservice.yaml', import.meta.url), 'utf8'));
const version = crd.spec.versions[0];
const root: Schema = version.schema.openAPIV3Schema;
const spec = root.properties!['spec']!;
const listeners = spec.properties!['listeners']!;
const udp = listeners.items!.properties!['udp']!;
const cluster = udp.properties!['cluster']!;
const endpoints = cluster.properties!['endpoints']!;
const host = endpoints.items!.properties!['host']!;

/**
 * The CRD's own schema, checked by ajv the way the apiserver checks a structural schema (CEL rules
 * aside): an object that lists its properties takes no others (the apiserver prunes them, and
 * refuses them with --validate=strict), and metadata, which has no schema of its own here, is
 * the apiserver's to check.
 */
const ajv = new Ajv({ allErrors: true, strict: true });
ajv.addVocabulary(['x-kubernetes-validations', 'x-kubernetes-list-type', 'x-kubernetes-list-map-keys']);
// The OpenAPI formats the CRD uses, as the apiserver reads them.
ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) });
ajv.addFormat('date-time', (t: string) => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(t) && !Number.isNaN(Date.parse(t)));

function asApiserverChecks(schema: Schema): object {
  const out: Record<string, unknown> = { ...schema };
  if (schema.properties) out['properties'] = Object.fromEntries(Object.entries(schema.properties).map(([k, v]) => [k, asApiserverChecks(v)]));
  if (schema.properties && !schema.additionalProperties) out['additionalProperties'] = false;
  if (schema.additionalProperties) out['additionalProperties'] = asApiserverChecks(schema.additionalProperties);
  if (schema.items) out['items'] = asApiserverChecks(schema.items);
  return out;
}

const validators = new Map<Schema, ValidateFunction>();

/** What the schema finds wrong with `value`, one line each (instance path and ajv's message). */
function violations(schema: Schema, value: unknown): string[] {
  let validate = validators.get(schema);
  if (!validate) validators.set(schema, (validate = ajv.compile(asApiserverChecks(schema))));
  return validate(value) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'}: ${e.message}`);
}

/** Structural schemas: every node says its type, and every object either lists its properties or maps values. */
function structuralProblems(schema: Schema, path: string): string[] {
  const out: string[] = [];
  if (!schema.type) out.push(`${path}: no type`);
  for (const [k, v] of Object.entries(schema.properties ?? {})) out.push(...structuralProblems(v, `${path}.${k}`));
  if (schema.additionalProperties) out.push(...structuralProblems(schema.additionalProperties, `${path}.*`));
  if (schema.type === 'array') {
    if (!schema.items) out.push(`${path}: array without items`);
    else out.push(...structuralProblems(schema.items, `${path}[]`));
  }
  if (schema.properties && schema.additionalProperties) out.push(`${path}: both properties and additionalProperties`);
  if (schema.default !== undefined) out.push(...violations({ ...schema, default: undefined }, schema.default).map((v) => `${path} (default) ${v}`));
  return out;
}

function exampleVirtualServices(): Record<string, unknown>[] {
  return ['ingress', 'worker'].flatMap((f) =>
    parseAllDocuments(readFileSync(new URL(`../examples/virtualservices/${f}.yaml`, import.meta.url), 'utf8')).map((d) => d.toJS()),
  );
}

describe('crds/virtualservice.yaml', () => {
  it('defines servicemesh.l7mp.io/v1 VirtualService, namespaced, with status and printer columns', () => {
    expect(crd.apiVersion).toBe('apiextensions.k8s.io/v1');
    expect(crd.metadata.name).toBe(`${PLURAL}.${GROUP}`);
    expect(crd.spec).toMatchObject({
      group: GROUP,
      scope: 'Namespaced',
      names: { kind: KIND, plural: PLURAL, singular: 'virtualservice', shortNames: ['vsvc'], categories: ['l7mp'] },
    });
    expect(crd.spec.versions).toHaveLength(1);
    expect(version).toMatchObject({ name: VERSION, served: true, storage: true, subresources: { status: {} } });
    expect(version.additionalPrinterColumns.map((c: { name: string; jsonPath: string }) => [c.name, c.jsonPath])).toEqual([
      ['Listeners', '.status.listeners'],
      ['Accepted', '.status.conditions[?(@.type=="Accepted")].status'],
      ['Synced', '.status.conditions[?(@.type=="Synced")].status'],
      ['Proxies', '.status.proxies.summary'],
      ['Age', '.metadata.creationTimestamp'],
    ]);
  });

  it('is a structural schema with valid defaults', () => {
    expect(structuralProblems(root, '')).toEqual([]);
  });

  it('admits the examples', () => {
    for (const vs of exampleVirtualServices()) expect(violations(root, vs)).toEqual([]);
  });

  it('admits the status vsxds writes', () => {
    const status = {
      observedGeneration: 2,
      conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'ok', observedGeneration: 2, lastTransitionTime: '2024-01-01T00:00:00Z' }],
      listeners: 2,
      proxies: { matched: 3, synced: 2, nacked: 1, summary: '2/3' },
      nackMessage: 'x',
      envoyClusters: { 'worker-rtp': 'vsxds-eds-2001-5642117eafda' },
      sessionLimits: { 'worker-rtp': 50_000 },
    };
    expect(violations(root.properties!['status']!, status)).toEqual([]);
  });

  it('rejects at admission what a schema can', () => {
    const [ingress] = exampleVirtualServices();
    const withListener = (l: unknown) => ({ ...ingress, spec: { selector: { app: 'ingress' }, listeners: [l] } });
    const good = (ingress as { spec: { listeners: Record<string, any>[] } }).spec.listeners[0]!;
    const bad = [
      withListener({ ...good, name: 'Bad_Name' }),
      withListener({ ...good, udp: { ...good['udp'], port: 0 } }),
      withListener({ ...good, udp: { ...good['udp'], port: 65536 } }),
      withListener({ ...good, udp: { ...good['udp'], cluster: { ...good['udp'].cluster, service_discovery: 'dns' } } }),
      withListener({ ...good, udp: { ...good['udp'], cluster: { ...good['udp'].cluster, health_check: { interval: 0 } } } }),
      withListener({ ...good, udp: { ...good['udp'], cluster: { ...good['udp'].cluster, health_check: { interval: 1, protocol: 'HTTP' } } } }),
      withListener({ ...good, udp: { ...good['udp'], cluster: { ...good['udp'].cluster, endpoints: [{ host: { address: '10.0.0.1' } }] } } }),
      withListener({ ...good, udp: { ...good['udp'], cluster: { ...good['udp'].cluster, endpoints: [] } } }),
      withListener({ ...good, udp: { ...good['udp'], idle_timeout_ms: 0 } }),
      withListener({ ...good, udp: { ...good['udp'], access_log: { destination: '/var/log/x' } } }),
      withListener({ ...good, udp: { ...good['udp'], access_log: { destination: 'stdout', path: '/var/log/x' } } }),
      withListener({ ...good, udp: { ...good['udp'], cluster: { ...good['udp'].cluster, max_sessions: 0 } } }),
      withListener({ ...good, udp: { ...good['udp'], cluster: { ...good['udp'].cluster, endpoints: [{ host: { address: '10.0.0.1' }, port: 1, weight: 0 }] } } }),
      { ...ingress, spec: { listeners: [] } },
      { ...ingress, spec: {} },
      { ...ingress, spec: { selector: {}, listeners: [good] } },
      { ...ingress, spec: { listeners: [good] } },
    ];
    for (const vs of bad) expect(violations(root, vs)).not.toEqual([]);
  });

  it('uses the limits that validation enforces', () => {
    expect(listeners.maxItems).toBe(limits.MAX_LISTENERS);
    expect(endpoints.maxItems).toBe(limits.MAX_ENDPOINTS);
    expect(spec.properties!['selector']!.maxProperties).toBe(limits.MAX_SELECTOR_LABELS);
    expect(host.properties!['selector']!.maxProperties).toBe(limits.MAX_SELECTOR_LABELS);
    expect(listeners.items!.properties!['name']!.maxLength).toBe(limits.MAX_NAME_LENGTH);
    expect(cluster.properties!['name']!.maxLength).toBe(limits.MAX_NAME_LENGTH);
    expect(cluster.properties!['hash_key']!.maxLength).toBe(limits.MAX_HASH_KEY_LENGTH);
    expect(host.properties!['address']!.maxLength).toBe(limits.MAX_ADDRESS_LENGTH);
    expect(cluster.properties!['health_check']!.properties!['interval']!.maximum).toBe(limits.MAX_HEALTH_CHECK_INTERVAL_MS);
    expect(udp.properties!['port']).toMatchObject({ minimum: limits.MIN_PORT, maximum: limits.MAX_PORT });
    expect(udp.properties!['idle_timeout_ms']).toMatchObject({ minimum: 1, maximum: limits.MAX_IDLE_TIMEOUT_MS });
    expect(udp.properties!['access_log']!.properties!['flush_interval_ms']).toMatchObject({ minimum: limits.MIN_ACCESS_LOG_FLUSH_INTERVAL_MS, maximum: limits.MAX_ACCESS_LOG_FLUSH_INTERVAL_MS });
    expect(udp.properties!['access_log']!.properties!['destination']!.enum).toEqual(['stdout', 'stderr']);
    expect(cluster.properties!['max_sessions']).toMatchObject({ minimum: 1, maximum: limits.MAX_SESSIONS });
    expect(endpoints.items!.properties!['weight']).toMatchObject({ minimum: 1, maximum: limits.MAX_ENDPOINT_WEIGHT });
  });

  it('checks uniqueness and exactly-one-host with CEL rules on bounded lists', () => {
    expect(listeners['x-kubernetes-validations']?.map((v) => v.rule)).toEqual([
      'self.all(l, self.exists_one(m, m.name == l.name))',
      'self.all(l, self.exists_one(m, m.udp.port == l.udp.port))',
    ]);
    expect(host['x-kubernetes-validations']?.map((v) => v.rule)).toEqual(['has(self.selector) != has(self.address)']);
  });

  it('says in its CEL message what validation says of hash_key with hash_source_ip', () => {
    expect(cluster['x-kubernetes-validations']).toEqual([{ rule: '!(has(self.hash_key) && has(self.hash_source_ip) && self.hash_source_ip)', message: HASH_EXCLUSIVE }]);
  });
});
