import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Subscription } from 'rxjs';
import type { ConfigPipeline } from '../main/config-pipeline.js';
import type { Source } from '../sources/source.js';
import type { SnapshotCache } from '../xds/snapshot-cache.js';
import { proxiesByGroup as byGroup, type ProxyStatusRegistry } from '../xds/status-registry.js';
import { shortTypeName } from '../xds/type-urls.js';

export interface MetricsDeps {
  readonly registry: ProxyStatusRegistry;
  readonly pipeline: ConfigPipeline;
  readonly cache: SnapshotCache;
  readonly source: Source;
}

/** The event-loop delay histogram's sampling interval: an idle loop reads this much delay. */
export const EVENT_LOOP_SAMPLE_S = 0.05;

/** Prometheus metrics for one vsxds process, in a registry of its own. */
export class Metrics {
  readonly prometheus = new Registry();
  private readonly subscription: Subscription;

  constructor(deps: MetricsDeps) {
    const reg = this.prometheus;
    // The event-loop delay histogram samples with a timer: prom-client's default 10 ms wakes the
    // process 100 times a second, idle or not (~0.7% of a core on its own). Node's histogram
    // records the whole interval between its timer's runs, so vsxds_nodejs_eventloop_lag_*
    // read EVENT_LOOP_SAMPLE_S on an idle loop: the delay is what exceeds it.
    collectDefaultMetrics({ register: reg, prefix: 'vsxds_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_S * 1000 });
    new Gauge({
      name: 'vsxds_connected_proxies',
      help: 'Proxies with an open ADS stream, by node group',
      labelNames: ['group'],
      registers: [reg],
      collect() {
        this.reset();
        for (const [group, proxies] of byGroup(deps.registry.list())) this.set({ group }, proxies.length);
      },
    });
    new Gauge({
      name: 'vsxds_unsynced_proxies',
      help: 'Connected proxies not in step with their group snapshot (a response in flight, or held back), by node group',
      labelNames: ['group'],
      registers: [reg],
      collect() {
        this.reset();
        for (const [group, proxies] of byGroup(deps.registry.list())) this.set({ group }, proxies.filter((p) => !p.synced).length);
      },
    });
    new Gauge({
      name: 'vsxds_unsynced_seconds',
      help: 'Longest time a connected proxy of the node group has been out of step with its snapshot without a break (0: all in step)',
      labelNames: ['group'],
      registers: [reg],
      collect() {
        this.reset();
        const now = performance.now();
        for (const [group, proxies] of byGroup(deps.registry.list())) {
          this.set({ group }, Math.max(0, ...proxies.map((p) => (p.synced || p.unsyncedSince === undefined ? 0 : (now - p.unsyncedSince) / 1000))));
        }
      },
    });
    new Gauge({
      name: 'vsxds_ready',
      help: '1 once the sources have synced and configuration is served',
      registers: [reg],
      collect() {
        this.set(deps.cache.ready ? 1 : 0);
      },
    });
    new Gauge({
      name: 'vsxds_virtualservices',
      help: 'VirtualServices known, by whether they are accepted',
      labelNames: ['accepted'],
      registers: [reg],
      collect() {
        const evaluated = [...deps.pipeline.current.evaluated.values()];
        this.set({ accepted: 'true' }, evaluated.filter((e) => e.accepted).length);
        this.set({ accepted: 'false' }, evaluated.filter((e) => !e.accepted).length);
      },
    });
    new Counter({
      name: 'vsxds_watch_restarts_total',
      help: 'Kubernetes list/watch restarts after errors',
      registers: [reg],
      collect() {
        this.reset();
        this.inc(deps.source.watchRestarts ?? 0);
      },
    });
    new Counter({
      name: 'vsxds_kube_writes_total',
      help: 'Writes to the Kubernetes API server: VirtualService status patches, Events (created, or a repeat counted on the one recorded), and this replica\'s status ConfigMap (its proxy counts, or a renewal)',
      labelNames: ['kind'],
      registers: [reg],
      collect() {
        this.reset();
        this.inc({ kind: 'status' }, deps.source.statusWriter?.writes ?? 0);
        this.inc({ kind: 'event' }, deps.source.events?.writes ?? 0);
        if (deps.source.replicas) this.inc({ kind: 'replica-status' }, deps.source.replicas.writes);
      },
    });
    const pushes = new Counter({ name: 'vsxds_xds_pushes_total', help: 'xDS responses sent', labelNames: ['type', 'mode'], registers: [reg] });
    const bytes = new Counter({ name: 'vsxds_xds_push_bytes_total', help: 'Bytes of xDS responses sent', labelNames: ['type', 'mode'], registers: [reg] });
    const acks = new Counter({ name: 'vsxds_xds_acks_total', help: 'xDS responses accepted by proxies', labelNames: ['type', 'mode'], registers: [reg] });
    const nacks = new Counter({ name: 'vsxds_xds_nacks_total', help: 'xDS responses rejected by proxies', labelNames: ['type', 'mode'], registers: [reg] });
    const latency = new Histogram({
      name: 'vsxds_xds_push_ack_seconds',
      help: 'Time from sending an xDS response to its ACK or NACK',
      labelNames: ['type'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [reg],
    });
    const builds = new Histogram({
      name: 'vsxds_snapshot_build_seconds',
      help: 'Duration of one build: validate, translate, encode and notify the streams',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [reg],
    });
    const streamErrors = new Counter({ name: 'vsxds_xds_stream_errors_total', help: 'ADS streams vsxds ended with an error status (bad request, refused identity, limits)', labelNames: ['code'], registers: [reg] });
    const buildErrors = new Counter({ name: 'vsxds_snapshot_build_errors_total', help: 'Node group snapshots that failed to build (the previous one stays)', registers: [reg] });
    deps.registry.observer = {
      pushed: (typeUrl, mode, n) => {
        const labels = { type: shortTypeName(typeUrl), mode };
        pushes.inc(labels);
        bytes.inc(labels, n);
      },
      streamFailed: (code) => streamErrors.inc({ code }),
      answered: (typeUrl, mode, accepted, ms) => {
        const type = shortTypeName(typeUrl);
        (accepted ? acks : nacks).inc({ type, mode });
        if (ms !== undefined) latency.observe({ type }, ms / 1000);
      },
    };
    let lastBuilds = 0;
    this.subscription = deps.pipeline.view$.subscribe((view) => {
      if (view.builds === lastBuilds) return;
      lastBuilds = view.builds;
      builds.observe(view.lastBuildMs / 1000);
      if (view.buildErrors.size > 0) buildErrors.inc(view.buildErrors.size);
    });
  }

  text(): Promise<string> {
    return this.prometheus.metrics();
  }

  get contentType(): string {
    return this.prometheus.contentType;
  }

  stop(): void {
    this.subscription.unsubscribe();
  }
}

