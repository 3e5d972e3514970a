/**
 * The install artefacts: deploy/ (kustomize), charts/vsxds (Helm) and the Dockerfile.
 *
 * Manifests are checked by a real kube-apiserver (server-side dry run: schemas, unknown fields,
 * admission including Pod Security), and RBAC is checked by impersonation against objects that
 * were really applied. Nothing is scheduled: there is no kubelet, so the Deployment never runs.
 * Helm is built from Go modules by deploy/hack/install-helm.sh on first use and cached; if that
 * fails the suite fails, it is never skipped.
 */
import { existsSync, lstatSync, readFileSync, readdirSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { startKubeEnv, type KubeEnv } from './support/kube-env.js';
import { ensureEnvoy } from './support/envoy.js';
import { INSTALL_TIMEOUT_MS, installedTool, run, runOk } from './support/tools.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const DEPLOY = path.join(ROOT, 'deploy');
const CHART = path.join(ROOT, 'charts', 'vsxds');
const CRD_FILE = path.join(ROOT, 'crds', 'virtualservice.yaml');
const NS = 'vsxds-system';
const CONTROL_PLANE = `system:serviceaccount:${NS}:vsxds`;
const VS = 'virtualservices.servicemesh.l7mp.io';

type Obj = Record<string, any>;

const installHelm = () => installedTool('deploy/hack/install-helm.sh', 'Helm');

const documents = (text: string): Obj[] =>
  parseAllDocuments(text)
    .map((d) => d.toJS() as Obj | null)
    .filter((d): d is Obj => d !== null && typeof d === 'object');

const key = (o: Obj) => `${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name}`;

/** Labels that say who installed an object, which legitimately differ between Helm and kustomize. */
const PROVENANCE = ['app.kubernetes.io/instance', 'app.kubernetes.io/managed-by', 'app.kubernetes.io/version', 'helm.sh/chart'];

function withoutProvenance(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutProvenance);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value as Obj)
      .filter(([k]) => !PROVENANCE.includes(k))
      .map(([k, v]) => [k, withoutProvenance(v)]),
  );
}

describe('deploy/ and charts/vsxds against a real kube-apiserver', { timeout: 120_000 }, () => {
  let kube: KubeEnv;
  let helm: string;
  let kustomized: Obj[];

  const helmTemplate = async (extra: string[] = []) =>
    documents(await runOk(helm, ['template', 'vsxds', CHART, '--namespace', NS, ...extra]));
  const canI = async (as: string, verb: string, resource: string, ...flags: string[]) => {
    const r = await kube.kubectl(['auth', 'can-i', verb, resource, `--as=${as}`, ...flags]);
    if (r.code > 1) throw new Error(`kubectl auth can-i failed: ${r.stderr}`);
    return r.stdout.trim() === 'yes';
  };

  beforeAll(async () => {
    [kube, helm] = await Promise.all([startKubeEnv(), installHelm()]);
    await kube.kubectlOk(['apply', '-f', CRD_FILE]);
    await kube.kubectlOk(['wait', '--for=condition=Established', `crd/${VS}`, '--timeout=60s']);
    kustomized = documents(await kube.kubectlOk(['kustomize', DEPLOY]));
    // Namespaced objects cannot be dry-run into a namespace that does not exist yet, and its Pod
    // Security labels must be in force for admission to judge the Deployment.
    const namespace = kustomized.filter((o) => o.kind === 'Namespace');
    expect(namespace.map((o) => o.metadata.name)).toEqual([NS]);
    await kube.kubectlOk(['apply', '-f', '-'], JSON.stringify(namespace[0]));
  }, INSTALL_TIMEOUT_MS + 5 * 60_000);

  afterAll(async () => {
    await kube?.stop();
  });

  it('kustomize base: the API server accepts every object (server-side dry run, strict fields, restricted Pod Security)', async () => {
    expect(kustomized.map(key).sort()).toEqual(
      [
        'ClusterRole//vsxds',
        'ClusterRole//vsxds-virtualservice-editor',
        'ClusterRole//vsxds-virtualservice-viewer',
        'ClusterRoleBinding//vsxds',
        `Deployment/${NS}/vsxds`,
        'Namespace//vsxds-system',
        `PodDisruptionBudget/${NS}/vsxds`,
        `Role/${NS}/vsxds-leader-election`,
        `RoleBinding/${NS}/vsxds-leader-election`,
        `Service/${NS}/vsxds`,
        `ServiceAccount/${NS}/vsxds`,
      ].sort(),
    );
    const r = await kube.kubectl(['apply', '--dry-run=server', '--validate=strict', '-k', DEPLOY]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/deployment\.apps\/vsxds created \(server dry run\)/);
  });

  it('kustomize base: the Deployment runs as described (image, args, probes, non-root, read-only, downward API)', () => {
    const deployment = kustomized.find((o) => o.kind === 'Deployment')!;
    const pod = deployment.spec.template.spec;
    const [container] = pod.containers;
    expect(deployment.spec.replicas).toBe(2);
    expect(container.image).toBe('vsxds:latest');
    expect(container.args).toEqual(['serve', '--source', 'kubernetes']);
    expect(container.ports).toEqual([
      { name: 'grpc', containerPort: 18000, protocol: 'TCP' },
      { name: 'http', containerPort: 18001, protocol: 'TCP' },
    ]);
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http' });
    expect(container.resources.requests).toBeDefined();
    expect(container.resources.limits).toBeDefined();
    expect(container.securityContext).toMatchObject({
      runAsNonRoot: true,
      runAsUser: 65532,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    const env = Object.fromEntries(container.env.map((e: Obj) => [e.name, e.value ?? e.valueFrom.fieldRef.fieldPath]));
    expect(env).toEqual({ VSXDS_LOG_LEVEL: 'info', VSXDS_NODE_AUTH: 'peer-ip', POD_NAME: 'metadata.name', POD_NAMESPACE: 'metadata.namespace', POD_UID: 'metadata.uid' });
    expect(pod.serviceAccountName).toBe('vsxds');
    expect(pod.topologySpreadConstraints.map((c: Obj) => c.topologyKey)).toContain('kubernetes.io/hostname');
    const service = kustomized.find((o) => o.kind === 'Service')!;
    expect(service.spec.type).toBe('ClusterIP');
    expect(service.spec.ports.map((p: Obj) => [p.name, p.port, p.appProtocol])).toEqual([
      ['grpc-xds', 18000, 'grpc'],
      ['http-admin', 18001, 'http'],
    ]);
    expect(kustomized.find((o) => o.kind === 'PodDisruptionBudget')!.spec.minAvailable).toBe(1);
  });

  it('kustomize base: leaves the CRD out, and says so where users look', async () => {
    expect(kustomized.some((o) => o.kind === 'CustomResourceDefinition')).toBe(false);
    expect(await readFile(path.join(DEPLOY, 'README.md'), 'utf8')).toContain('kubectl apply -f crds/');
  });

  it('Helm chart: lints strictly, ships the very CRD in crds/ (symlink followed), and the API server accepts what it renders', async () => {
    await runOk(helm, ['lint', '--strict', CHART]);
    expect(lstatSync(path.join(CHART, 'crds', 'virtualservice.yaml')).isSymbolicLink()).toBe(true);
    const withCrds = await helmTemplate(['--include-crds']);
    const crds = withCrds.filter((o) => o.kind === 'CustomResourceDefinition');
    expect(crds).toEqual([parse(readFileSync(CRD_FILE, 'utf8'))]);

    const rendered = withCrds.filter((o) => o.kind !== 'CustomResourceDefinition');
    const r = await kube.kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: rendered }));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('Helm chart: with default values it renders the same objects as the kustomize base', async () => {
    const rendered = await helmTemplate();
    // The chart leaves the namespace to `helm install --create-namespace` (or the operator).
    const base = kustomized.filter((o) => o.kind !== 'Namespace');
    expect(rendered.map(key).sort()).toEqual(base.map(key).sort());
    const byKey = new Map(rendered.map((o) => [key(o), o]));
    for (const o of base) {
      expect(withoutProvenance(byKey.get(key(o))), key(o)).toEqual(withoutProvenance(o));
    }
  });

  it('monitoring: deploy/monitoring and the chart (when enabled) give the same dashboard ConfigMap and PrometheusRule; the API server accepts the ConfigMap', async () => {
    const monitoring = path.join(DEPLOY, 'monitoring');
    const kustomizedMonitoring = documents(await kube.kubectlOk(['kustomize', monitoring]));
    const rendered = await helmTemplate(['--set', 'monitoring.grafanaDashboard.enabled=true', '--set', 'monitoring.prometheusRule.enabled=true', '--show-only', 'templates/grafana-dashboard.yaml', '--show-only', 'templates/prometheusrule.yaml']);
    expect(kustomizedMonitoring.map(key).sort()).toEqual([`ConfigMap/${NS}/vsxds-grafana-dashboard`, `PrometheusRule/${NS}/vsxds`]);
    expect(rendered.map(key).sort()).toEqual(kustomizedMonitoring.map(key).sort());
    const dashboard = readFileSync(path.join(monitoring, 'vsxds-dashboard.json'), 'utf8');
    const rules = parse(readFileSync(path.join(monitoring, 'vsxds-alerts.rules.yaml'), 'utf8'));
    for (const objects of [kustomizedMonitoring, rendered]) {
      const configMap = objects.find((o) => o.kind === 'ConfigMap')!;
      expect(configMap.metadata.labels.grafana_dashboard).toBe('1');
      expect(JSON.parse(configMap.data['vsxds-dashboard.json'])).toEqual(JSON.parse(dashboard));
      expect(objects.find((o) => o.kind === 'PrometheusRule')!.spec).toEqual(rules);
    }
    // The cluster has no Prometheus Operator CRDs: only the ConfigMap can be judged by it.
    for (const configMap of [kustomizedMonitoring, rendered].map((objects) => objects.find((o) => o.kind === 'ConfigMap')!)) {
      const r = await kube.kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], JSON.stringify(configMap));
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
    // Off by default, so that the chart installs where there is no Prometheus Operator.
    expect((await helmTemplate()).filter((o) => o.kind === 'PrometheusRule' || o.kind === 'ConfigMap')).toEqual([]);
  });

  it('Helm chart: image, replicas, log level, extra args, service ports, resources and scheduling come from values', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'vsxds-values-'));
    try {
      const values = path.join(dir, 'values.yaml');
      await writeFile(
        values,
        JSON.stringify({
          image: { repository: 'registry.example/vsxds', tag: 'v0.1.0' },
          replicaCount: 3,
          logLevel: 'debug',
          extraArgs: ['--namespace', 'media', '--coalesce-ms', 50],
          service: { ports: { xds: 15010, admin: 15011 } },
          // Helm merges maps with the defaults: a key is removed by setting it to null.
          resources: { requests: { cpu: '250m', memory: '256Mi' }, limits: { cpu: null, memory: '1Gi' } },
          nodeSelector: { 'kubernetes.io/os': 'linux' },
          tolerations: [{ key: 'control-plane', operator: 'Exists', effect: 'NoSchedule' }],
          affinity: { nodeAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 1, preference: { matchExpressions: [{ key: 'tier', operator: 'In', values: ['infra'] }] } }] } },
          podDisruptionBudget: { enabled: false },
        }),
      );
      const objects = await helmTemplate(['--values', values]);
      const deployment = objects.find((o) => o.kind === 'Deployment')!;
      const pod = deployment.spec.template.spec;
      const [container] = pod.containers;
      expect(deployment.spec.replicas).toBe(3);
      expect(container.image).toBe('registry.example/vsxds:v0.1.0');
      expect(container.args).toEqual(['serve', '--source', 'kubernetes', '--namespace', 'media', '--coalesce-ms', '50']);
      expect(container.env.find((e: Obj) => e.name === 'VSXDS_LOG_LEVEL').value).toBe('debug');
      expect(container.resources).toEqual({ requests: { cpu: '250m', memory: '256Mi' }, limits: { memory: '1Gi' } });
      expect(pod.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
      expect(pod.tolerations).toHaveLength(1);
      expect(pod.affinity.nodeAffinity).toBeDefined();
      const service = objects.find((o) => o.kind === 'Service')!;
      expect(service.spec.ports.map((p: Obj) => [p.port, p.targetPort])).toEqual([
        [15010, 'grpc'],
        [15011, 'http'],
      ]);
      expect(objects.some((o) => o.kind === 'PodDisruptionBudget')).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('Helm chart: proxies prove their pod by default, by peer IP, and by client certificate when given a CA', async () => {
    const container = async (values: Obj) => {
      const dir = await mkdtemp(path.join(tmpdir(), 'vsxds-values-'));
      try {
        const file = path.join(dir, 'values.yaml');
        await writeFile(file, JSON.stringify(values));
        const deployment = (await helmTemplate(['--values', file])).find((o) => o.kind === 'Deployment')!;
        return { pod: deployment.spec.template.spec, c: deployment.spec.template.spec.containers[0], env: Object.fromEntries(deployment.spec.template.spec.containers[0].env.filter((e: Obj) => e.value !== undefined).map((e: Obj) => [e.name, e.value])) };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    };
    expect((await container({})).env['VSXDS_NODE_AUTH']).toBe('peer-ip');
    const mtls = await container({ xdsTls: { secretName: 'vsxds-xds-tls' } });
    expect(mtls.env).toMatchObject({
      VSXDS_NODE_AUTH: 'client-cert',
      VSXDS_XDS_TLS_CERT: '/etc/vsxds/xds-tls/tls.crt',
      VSXDS_XDS_TLS_KEY: '/etc/vsxds/xds-tls/tls.key',
      VSXDS_XDS_TLS_CLIENT_CA: '/etc/vsxds/xds-tls/ca.crt',
    });
    expect(mtls.c.volumeMounts).toContainEqual({ name: 'xds-tls', mountPath: '/etc/vsxds/xds-tls', readOnly: true });
    expect(mtls.pod.volumes).toContainEqual({ name: 'xds-tls', secret: { secretName: 'vsxds-xds-tls' } });
    const tlsOnly = await container({ xdsTls: { secretName: 'vsxds-xds-tls', clientCa: false } });
    expect([tlsOnly.env['VSXDS_NODE_AUTH'], tlsOnly.env['VSXDS_XDS_TLS_CLIENT_CA']]).toEqual(['peer-ip', undefined]);
    await expect(container({ nodeAuth: 'client-cert' })).rejects.toThrow(/nodeAuth client-cert needs mutual TLS/);
  });

  it('examples/kubernetes: the API server accepts the Envoy manifests, whose Envoys name their pod through the downward API', async () => {
    for (const file of ['ingress.yaml', 'worker.yaml']) {
      const text = readFileSync(path.join(ROOT, 'examples', 'kubernetes', file), 'utf8');
      const r = await kube.kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], text);
      expect(r.stderr, file).toBe('');
      const deployment = documents(text).find((o) => o.kind === 'Deployment')!;
      const [envoy] = deployment.spec.template.spec.containers;
      expect(envoy.args.slice(envoy.args.indexOf('--service-node'), envoy.args.indexOf('--service-node') + 2)).toEqual(['--service-node', '$(POD_NAMESPACE)/$(POD_NAME)']);
      const env = Object.fromEntries(envoy.env.map((e: Obj) => [e.name, e.valueFrom?.fieldRef?.fieldPath]));
      expect(env).toEqual({ POD_NAME: 'metadata.name', POD_NAMESPACE: 'metadata.namespace' });
      // node.id is left to --service-node: an id in the bootstrap would name one pod for every replica.
      const bootstrap = parse(documents(text).find((o) => o.kind === 'ConfigMap')!.data['bootstrap.yaml']);
      expect(bootstrap.node.id).toBeUndefined();
    }
  });

  it('examples/kubernetes: Envoy accepts the ingress and worker bootstraps of the ConfigMaps', async () => {
    const envoy = await ensureEnvoy();
    const dir = await mkdtemp(path.join(tmpdir(), 'vsxds-bootstrap-'));
    try {
      for (const file of ['ingress.yaml', 'worker.yaml']) {
        const text = readFileSync(path.join(ROOT, 'examples', 'kubernetes', file), 'utf8');
        const bootstrap = path.join(dir, file);
        const bootstrapText = documents(text).find((o) => o.kind === 'ConfigMap')!.data['bootstrap.yaml'];
        await writeFile(bootstrap, bootstrapText);
        const r = await run(envoy, ['--mode', 'validate', '-c', bootstrap, '--service-node', 'default/pod-1', '--service-cluster', 'test']);
        expect({ code: r.code, ok: /^configuration .* OK$/m.test(r.stdout) }, `${file}: ${r.stderr.slice(-2000)}`).toEqual({ code: 0, ok: true });
        if (file === 'ingress.yaml') {
          // Every ingress bootstrap drops the call listeners' per-address stats alike.
          const stats = (name: string) => parse(readFileSync(path.join(ROOT, 'examples', 'envoy', name), 'utf8')).stats_config;
          expect(stats('ingress.yaml')).toBeDefined();
          expect(parse(bootstrapText).stats_config).toEqual(stats('ingress.yaml'));
          expect(stats('ingress-mtls.yaml')).toEqual(stats('ingress.yaml'));
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, INSTALL_TIMEOUT_MS);

  describe('applied for real (RBAC checked by impersonation)', () => {
    beforeAll(async () => {
      await kube.kubectlOk(['apply', '-k', DEPLOY]);
    });

    it('the control plane may read VirtualServices and pods everywhere, write status and events, hold its Lease and write its replica status ConfigMaps', async () => {
      const allowed: [string, string, ...string[]][] = [
        ['get', VS, '-A'],
        ['list', VS, '-A'],
        ['watch', VS, '-A'],
        ['patch', VS, '--subresource=status', '-n', 'default'],
        ['update', VS, '--subresource=status', '-n', 'default'],
        ['get', 'pods', '-A'],
        ['list', 'pods', '-A'],
        ['watch', 'pods', '-A'],
        ['create', 'events', '-n', 'default'],
        ['patch', 'events', '-n', 'default'],
        ['create', 'events.events.k8s.io', '-n', 'default'],
        ['get', 'leases.coordination.k8s.io/vsxds-leader', '-n', NS],
        ['create', 'leases.coordination.k8s.io', '-n', NS],
        ['update', 'leases.coordination.k8s.io/vsxds-leader', '-n', NS],
        // Replica status: each replica's ConfigMap, and the leader's list and watch of them.
        ['create', 'configmaps', '-n', NS],
        ['list', 'configmaps', '-n', NS],
        ['watch', 'configmaps', '-n', NS],
        ['get', 'configmaps/vsxds-replica-vsxds-7d9f-abcde', '-n', NS],
        ['update', 'configmaps/vsxds-replica-vsxds-7d9f-abcde', '-n', NS],
        ['patch', 'configmaps/vsxds-replica-vsxds-7d9f-abcde', '-n', NS],
        ['delete', 'configmaps/vsxds-replica-vsxds-7d9f-abcde', '-n', NS],
      ];
      for (const [verb, resource, ...flags] of allowed) {
        expect(await canI(CONTROL_PLANE, verb, resource, ...flags), `can ${verb} ${resource} ${flags.join(' ')}`).toBe(true);
      }
    });

    it('the control plane may do nothing else: no VirtualService spec writes, no secrets, no pod writes, no Leases or ConfigMaps elsewhere', async () => {
      const denied: [string, string, ...string[]][] = [
        ['create', VS, '-n', 'default'],
        ['update', VS, '-n', 'default'],
        ['patch', VS, '-n', 'default'],
        ['delete', VS, '-n', 'default'],
        ['get', 'secrets', '-n', NS],
        ['list', 'secrets', '-A'],
        ['get', 'configmaps', '-n', 'default'],
        ['create', 'configmaps', '-n', 'default'],
        ['list', 'configmaps', '-A'],
        ['watch', 'configmaps', '-A'],
        ['update', 'configmaps', '-n', 'kube-system'],
        ['update', 'pods', '-n', 'default'],
        ['patch', 'pods', '-n', 'default'],
        ['delete', 'pods', '-n', 'default'],
        ['create', 'pods', '-n', NS],
        ['update', 'pods', '--subresource=status', '-n', 'default'],
        ['get', 'events', '-n', 'default'],
        ['delete', 'leases.coordination.k8s.io', '-n', NS],
        ['update', 'leases.coordination.k8s.io/some-other-controller', '-n', NS],
        ['get', 'leases.coordination.k8s.io', '-n', 'kube-system'],
        ['update', 'leases.coordination.k8s.io', '-n', 'kube-node-lease'],
        ['create', 'leases.coordination.k8s.io', '-n', 'default'],
        ['update', 'customresourcedefinitions.apiextensions.k8s.io'],
        ['*', '*', '-A'],
      ];
      for (const [verb, resource, ...flags] of denied) {
        expect(await canI(CONTROL_PLANE, verb, resource, ...flags), `cannot ${verb} ${resource} ${flags.join(' ')}`).toBe(false);
      }
    });

    it('an application bound to the editor ClusterRole manages VirtualServices in its own namespace, and only there', async () => {
      const app = 'alice';
      await kube.kubectlOk(['create', 'namespace', 'media']);
      await kube.kubectlOk(['create', 'rolebinding', 'vs-editor', '--clusterrole=vsxds-virtualservice-editor', `--user=${app}`, '-n', 'media']);
      for (const verb of ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete']) {
        expect(await canI(app, verb, VS, '-n', 'media'), verb).toBe(true);
      }
      expect(await canI(app, 'get', VS, '--subresource=status', '-n', 'media')).toBe(true);
      expect(await canI(app, 'patch', VS, '--subresource=status', '-n', 'media')).toBe(false);
      expect(await canI(app, 'create', VS, '-n', 'default')).toBe(false);
      expect(await canI(app, 'get', 'pods', '-n', 'media')).toBe(false);

      const vs = {
        apiVersion: 'servicemesh.l7mp.io/v1',
        kind: 'VirtualService',
        metadata: { name: 'rtp', namespace: 'media' },
        spec: {
          selector: { app: 'ingress' },
          listeners: [{ name: 'rtp', udp: { port: 2000, cluster: { name: 'rtp', service_discovery: 'eds', endpoints: [{ host: { selector: { app: 'worker' } }, port: 2001 }] } } }],
        },
      };
      await kube.kubectlOk(['apply', `--as=${app}`, '-f', '-'], JSON.stringify(vs));
      expect(await kube.kubectlOk(['get', 'vsvc', 'rtp', '-n', 'media', `--as=${app}`, '-o', 'name'])).toContain('rtp');
      await kube.kubectlOk(['delete', 'vsvc', 'rtp', '-n', 'media', `--as=${app}`]);
    });

    it('a user bound to the viewer ClusterRole can read VirtualServices and their status but not change them', async () => {
      await kube.kubectlOk(['create', 'rolebinding', 'vs-viewer', '--clusterrole=vsxds-virtualservice-viewer', '--user=bob', '-n', 'media']);
      for (const verb of ['get', 'list', 'watch']) expect(await canI('bob', verb, VS, '-n', 'media'), verb).toBe(true);
      expect(await canI('bob', 'get', VS, '--subresource=status', '-n', 'media')).toBe(true);
      for (const verb of ['create', 'update', 'patch', 'delete']) expect(await canI('bob', verb, VS, '-n', 'media'), verb).toBe(false);
    });

    it('the user ClusterRoles carry the labels that aggregate them into the built-in admin, edit and view roles', async () => {
      const labels = async (name: string) => JSON.parse(await kube.kubectlOk(['get', 'clusterrole', name, '-o', 'json'])).metadata.labels;
      expect(await labels('vsxds-virtualservice-editor')).toMatchObject({
        'rbac.authorization.k8s.io/aggregate-to-admin': 'true',
        'rbac.authorization.k8s.io/aggregate-to-edit': 'true',
      });
      expect(await labels('vsxds-virtualservice-viewer')).toMatchObject({ 'rbac.authorization.k8s.io/aggregate-to-view': 'true' });
    });
  });
});

describe('Dockerfile (checked statically: no container engine here)', { timeout: 180_000 }, () => {
  interface Stage {
    name?: string;
    from: string;
    workdir: string;
    instructions: { op: string; args: string }[];
  }

  function stages(): Stage[] {
    const text = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
    const result: Stage[] = [];
    for (const line of text.split('\n').map((l) => l.trim())) {
      if (line === '' || line.startsWith('#')) continue;
      const [op = '', ...rest] = line.split(/\s+/);
      const args = rest.join(' ');
      if (op.toUpperCase() === 'FROM') {
        const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
        result.push({ from: m![1]!, ...(m![2] ? { name: m![2] } : {}), workdir: '/', instructions: [] });
      } else if (result.length > 0) {
        const stage = result.at(-1)!;
        if (op.toUpperCase() === 'WORKDIR') stage.workdir = path.posix.resolve(stage.workdir, args);
        stage.instructions.push({ op: op.toUpperCase(), args });
      }
    }
    return result;
  }

  const copies = (stage: Stage) =>
    stage.instructions
      .filter((i) => i.op === 'COPY')
      .map((i) => {
        const words = i.args.split(/\s+/);
        const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
        const paths = words.filter((w) => !w.startsWith('--'));
        return { from, sources: paths.slice(0, -1), dest: paths.at(-1)! };
      });

  const dockerignore = () =>
    readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));

  let work: string;
  let app: string;

  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'vsxds-image-'));
    app = path.join(work, 'app');
  });

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('builds in one stage and runs in another, as a numeric non-root user, exposing the xDS and admin ports', () => {
    const all = stages();
    expect(all.length).toBe(2);
    const [build, runtime] = all as [Stage, Stage];
    expect(build.name).toBe('build');
    expect(build.from).toMatch(/^node:\$\{NODE_MAJOR\}-bookworm-slim$/);
    const runs = build.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
    expect(runs.join('\n')).toMatch(/npm ci/);
    expect(runs.join('\n')).toMatch(/npm run build/);
    expect(runs.join('\n')).toMatch(/npm prune --omit=dev/);
    const user = runtime.instructions.filter((i) => i.op === 'USER').at(-1)?.args;
    expect(user).toBe('65532:65532');
    expect(runtime.instructions.find((i) => i.op === 'EXPOSE')?.args.split(/\s+/).sort()).toEqual(['18000', '18001']);
    expect(JSON.parse(runtime.instructions.find((i) => i.op === 'CMD')!.args)).toEqual(['serve']);
    expect(runtime.instructions.some((i) => i.op === 'RUN')).toBe(false);
  });

  it('copies from the build context only files that exist and that .dockerignore lets through', () => {
    const ignored = dockerignore();
    expect(ignored).toEqual(expect.arrayContaining(['.git', 'node_modules', 'dist']));
    for (const stage of stages()) {
      for (const copy of copies(stage).filter((c) => c.from === undefined)) {
        for (const source of copy.sources) {
          const top = source.replace(/^\.\//, '').split('/')[0]!;
          expect(existsSync(path.join(ROOT, source)), `${source} exists`).toBe(true);
          expect(ignored, `${source} is not excluded by .dockerignore`).not.toContain(top);
        }
      }
    }
  });

  it('gives the runtime stage a file set that starts with production dependencies only', async () => {
    const [build, runtime] = stages() as [Stage, Stage];
    // What the build stage holds once `npm run build` and `npm prune --omit=dev` have run.
    const tsconfigBuild = parse(readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8'));
    expect(tsconfigBuild.compilerOptions.outDir).toBe('dist');
    const built = path.join(work, 'dist');
    await runOk(path.join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.build.json', '--outDir', built], { timeoutMs: 170_000 });
    // Not runOk: npm ls also exits non-zero for problems in the dev tree, which the image never sees.
    const production = (await run('npm', ['ls', '--omit=dev', '--all', '--parseable'])).stdout
      .split('\n')
      .map((p) => path.relative(ROOT, p.trim()))
      .filter((p) => /^node_modules\/(@[^/]+\/)?[^/]+$/.test(p));
    expect(production).toEqual(expect.arrayContaining(['node_modules/@grpc/grpc-js', 'node_modules/@kubernetes/client-node']));
    const buildStage = async (stagePath: string, dest: string) => {
      const rel = path.posix.relative(build.workdir, stagePath);
      if (rel === 'dist') return cp(built, dest, { recursive: true });
      if (rel === 'node_modules') {
        for (const p of production) await cp(path.join(ROOT, p), path.join(dest, path.relative('node_modules', p)), { recursive: true, verbatimSymlinks: true });
        return;
      }
      const fromContext = copies(build).some((c) => c.from === undefined && c.sources.some((s) => path.posix.normalize(s) === rel || path.posix.normalize(s) === `${rel}/`));
      expect(fromContext, `${stagePath} is put into the build stage by a COPY`).toBe(true);
      return cp(path.join(ROOT, rel), dest, { recursive: true });
    };

    for (const copy of copies(runtime)) {
      // The allocator the build stage installed (checked below) is no file of the application.
      if (copy.from === 'build' && copy.sources.every((source) => source.startsWith('/opt/jemalloc/'))) continue;
      for (const source of copy.sources) {
        const dest = path.join(app, path.posix.relative(runtime.workdir, path.posix.resolve(runtime.workdir, copy.dest)));
        if (copy.from === 'build') await buildStage(source, dest);
        else await cp(path.join(ROOT, source), dest, { recursive: true });
      }
    }
    expect(readdirSync(app).sort()).toEqual(['crds', 'dist', 'node_modules', 'package.json', 'protos']);
    expect(existsSync(path.join(app, 'node_modules', 'vitest'))).toBe(false);

    const entrypoint = JSON.parse(runtime.instructions.find((i) => i.op === 'ENTRYPOINT')!.args) as string[];
    expect(entrypoint[0]).toBe('/nodejs/bin/node');
    const main = entrypoint.slice(1);
    expect(existsSync(path.join(app, main[0]!))).toBe(true);

    // Run the image's command line with the host's node, from the image's WORKDIR.
    const help = await runOk(process.execPath, [...main, '--help'], { cwd: app });
    expect(help).toMatch(/vsxds serve/);
    const rendered = await runOk(process.execPath, [...main, 'render', '--source', `file:${path.join(ROOT, 'examples')}`, '--node-namespace', 'default', '--node-labels', 'app=ingress'], { cwd: app });
    expect(rendered).toMatch(/ingress-rtp/);
    // Every module the image ships loads with production dependencies alone (the CLI entry runs on import, so it was exercised above).
    const modules = readdirSync(path.join(app, 'dist'), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.js') && f !== path.join('main', 'cli.js'))
      .map((f) => `./dist/${f.split(path.sep).join('/')}`);
    const script = `for (const m of ${JSON.stringify(modules)}) await import(m);`;
    await runOk(process.execPath, ['--input-type=module', '-e', script], { cwd: app });
  });

  it('runs Node with jemalloc, which the build stage installs from Debian and the runtime stage copies and preloads', () => {
    const [build, runtime] = stages() as [Stage, Stage];
    const env = new Map(runtime.instructions.filter((i) => i.op === 'ENV').map((i) => i.args.split('=', 2) as [string, string]));
    const preload = env.get('LD_PRELOAD');
    expect(preload).toBe('/opt/jemalloc/libjemalloc.so.2');
    expect(env.get('MALLOC_CONF')).toMatch(/background_thread:true/);
    expect(copies(runtime)).toContainEqual({ from: 'build', sources: [preload], dest: preload });
    const install = build.instructions.filter((i) => i.op === 'RUN').map((i) => i.args).find((r) => r.includes('libjemalloc2'));
    expect(install).toMatch(/apt-get install -y --no-install-recommends libjemalloc2/);
    expect(install).toContain('/opt/jemalloc/');
  });
});
