/**
 * The "calls at scale" workload, shared by test/envoy/calls.test.ts and bench/calls.ts (B5).
 *
 * A media controller creates one VirtualService per call through the Kubernetes API (one UDP
 * listener on a port of its own on the ingress Envoy, an EDS cluster of the worker pods with a
 * TCP health check, hash_key = the call's name) and deletes it when the call ends. Here:
 *
 * - `WorkerSinks`: each worker "pod" is a UDP sink on <ip>:<sinkPort> that counts what it
 *   receives per call, and a TCP port <ip>:<healthPort> that Envoy's health checks connect to.
 * - `CallLoad`: the calls. Each has its own UDP socket (its own Envoy session) that sends to
 *   127.0.0.1:<port> every 10 ms until the first datagram reaches a worker (every 50 ms once it
 *   has waited 2 s), then every 100 ms. On a reused port the first datagrams may go through the
 *   previous call's listener, still running, to the previous call's worker: a call whose first
 *   datagram arrived there keeps sending every 10 ms until its own listener's first datagram
 *   arrives (a new Envoy session: a new source port at the worker), for up to HANDOVER_FAST_MS,
 *   so that its own listener's setup is timed to within 10 ms too;
 *   the payload carries the call's index, a sequence number and the send time. Sending stops
 *   100 ms before the VirtualService is deleted. Ports come from a LIFO pool, so a port freed
 *   by a call that ended is the next one handed out.
 *
 * Everything runs on timers in one process: one 10 ms tick drives every call's sending and
 * its life cycle, and the sinks read their sockets in a worker thread of the same process, so
 * send and arrival times come from one clock (performance.timeOrigin + performance.now(), epoch
 * milliseconds).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { Worker } from 'node:worker_threads';
import { KubeConfig } from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION } from '../../src/model/types.js';
import { json, KubeHttp } from '../../src/sources/kube-http.js';
import { TcpPort } from './udp.js';

export const now = (): number => performance.timeOrigin + performance.now();

// Payload: u32 call index, u32 sequence, f64 send time, u8 flags (1: a teardown probe).
const PAYLOAD_BYTES = 17;
const FLAG_PROBE = 1;

const DEBUG = process.env['B5_DEBUG'] === '1';
const TICK_MS = 10;
/** A datagram that arrives this long after it was sent did not go through a running listener. */
const STALE_MS = 200;
const CONNECTING_INTERVAL_MS = 10;
/**
 * A call not connected after this long sends every SLOW_CONNECTING_INTERVAL_MS instead: with
 * thousands of calls waiting for their listeners, 100 datagrams/s each would be the rig's load,
 * not vsxds's. Setups beyond it are measured to within that interval.
 */
const SLOW_CONNECTING_AFTER_MS = 2_000;
const SLOW_CONNECTING_INTERVAL_MS = 50;
const ESTABLISHED_INTERVAL_MS = 100;
/**
 * A call on a reused port sends every CONNECTING_INTERVAL_MS for this long after its first
 * arrival, until its own listener's first datagram (at 50 calls/s the own listener's session
 * starts at most ~110 ms after the previous listener's).
 */
export const HANDOVER_FAST_MS = 300;
const STOP_BEFORE_DELETE_MS = 100;

export interface WorkerSpec {
  readonly name: string;
  readonly ip: string;
}

export interface CallRecord {
  readonly index: number;
  readonly name: string;
  readonly port: number;
  /** Another call had this port and was deleted before this one was created. */
  readonly reusedPort: boolean;
  /** Whether teardown is measured on this call (its port is held until probing ends). */
  readonly sampled: boolean;
  /** When the create request was sent (epoch ms). */
  createSentAt: number;
  createDoneAt?: number;
  createError?: string;
  /** When the first datagram reached a worker. */
  firstAt?: number;
  /** Workers that received this call's datagrams (not probes). */
  readonly workers: Set<string>;
  /** Per worker: datagrams received, and the first and last arrival (ms after the create was sent). */
  readonly byWorker: Record<string, { n: number; firstMs: number; lastMs: number }>;
  /**
   * On a reused port, while the call waits to tell its own listener (see handingOver): Envoy's
   * sessions that forwarded its datagrams (`<worker>:<Envoy's source port>`), with their first
   * arrival. Each listener has sessions of its own.
   */
  readonly sessions: Map<string, number>;
  /** Sequence number of the first datagram that arrived. */
  firstSeq?: number;
  /**
   * On a reused port: the first datagram reached a worker other than the previous call's (whose
   * listener hashes everything to its own), so it came through this call's own listener.
   */
  firstThroughOwn?: boolean;
  /**
   * On a reused port: the first arrival through a session that began with a datagram sent on a
   * later beat than the first arrival's (all of a call's sockets send on each beat, so the
   * sessions of one listener begin on the same beat), within HANDOVER_FAST_MS of the first
   * arrival: the call's own listener, after the previous call's. (Later, a new session is a
   * session moved by a fault, say.)
   */
  newSessionAt?: number;
  /** Next sequence number to send. */
  seq: number;
  /** Send time of each datagram, by sequence number (probes too). */
  readonly sentAt: number[];
  /** When each datagram arrived (0: never), by sequence number, in chunks of 1,024. */
  readonly arrived: Float64Array[];
  /** Sequence number of the first probe (datagrams from here on are teardown probes). */
  stopSeq?: number;
  /** Datagrams received in total (probes excluded). */
  received: number;
  stopAt?: number;
  deleteSentAt?: number;
  deleteDoneAt?: number;
  deleteError?: string;
  /** Send time of the last teardown probe that reached a worker. */
  lastProbeArrivedSentAt?: number;
  lastProbeArrivalAt?: number;
  probesSent: number;
  /** Datagrams (probes too) that arrived more than STALE_MS after they were sent (late probes do not count for teardown). */
  stale: number;
  /** Ended and its port returned to the pool. */
  doneAt?: number;
}

/** Listener ports: the last one is handed out first, and a freed port goes back on top (LIFO). */
export class PortPool {
  private readonly free: number[];
  /** Ports a call had and gave back, with the last call that had each. */
  private readonly lastHolder = new Map<number, CallRecord>();

  constructor(ports: readonly number[]) {
    this.free = [...ports];
  }

  take(): number | undefined {
    return this.free.pop();
  }

  /** Whether a call had this port before. */
  used(port: number): boolean {
    return this.lastHolder.has(port);
  }

  /** The last call that had this port, if any. */
  lastHolderOf(port: number): CallRecord | undefined {
    return this.lastHolder.get(port);
  }

  give(port: number, holder: CallRecord): void {
    this.lastHolder.set(port, holder);
    this.free.push(port);
  }
}

/**
 * The sinks' receive loop, run in a worker thread of its own: with thousands of calls, this
 * process's main thread (every call's sends, the bookkeeping, the API requests) stalls for long
 * enough on a busy machine that the sinks' socket buffers overflowed, and the rig lost datagrams
 * that Envoy had forwarded (B5's "kernel UDP drops" column). The thread only reads its sockets,
 * stamps each datagram with its arrival time and writes it into a ring in shared memory, which
 * the main thread reads every few milliseconds: no message and no allocation per batch. A ring
 * full because the main thread stalled spills into an array in the thread, written to the ring
 * once there is room. B5_SINK_NICE=-10 (say) runs the thread at that nice level (root only).
 * Plain JavaScript in a string, so that it runs the same under vitest and from bench/.build.
 */
const SINK_THREAD = `
const { parentPort, workerData } = require('node:worker_threads');
const dgram = require('node:dgram');
const fs = require('node:fs');
const os = require('node:os');
const now = () => performance.timeOrigin + performance.now();
const { ips, port, payloadBytes, rcvbuf, nice, ring, fields } = workerData;
if (nice) {
  try {
    os.setPriority(Number(fs.readlinkSync('/proc/thread-self').split('/').pop()), nice);
  } catch {}
}
const head = new Int32Array(ring, 0, 4);
const data = new Float64Array(ring, 16);
const cap = data.length / fields;
const spill = [];
let written = 0;
let spillTimer;
function put(e) {
  if (((written - Atomics.load(head, 1)) | 0) >= cap) return false;
  data.set(e, (written & (cap - 1)) * fields);
  written = (written + 1) | 0;
  Atomics.store(head, 0, written);
  return true;
}
function unspill() {
  spillTimer = undefined;
  let i = 0;
  while (i < spill.length && put(spill[i])) i++;
  spill.splice(0, i);
  if (spill.length > 0) spillTimer = setTimeout(unspill, 5);
}
const sockets = ips.map((ip, w) => {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    const at = now();
    if (msg.length !== payloadBytes) {
      Atomics.add(head, 2, 1);
      return;
    }
    const e = [w, msg.readUInt32BE(0), msg.readUInt32BE(4), msg.readDoubleBE(8), msg.readUInt8(16), at, rinfo.port];
    if (spill.length > 0 || !put(e)) {
      spill.push(e);
      spillTimer ??= setTimeout(unspill, 5);
    }
  });
  socket.on('error', () => undefined);
  return socket;
});
Promise.all(sockets.map((socket, w) => new Promise((resolve, reject) => {
  socket.once('error', reject);
  socket.bind(port, ips[w], () => {
    socket.off('error', reject);
    try { socket.setRecvBufferSize(rcvbuf); } catch {}
    resolve();
  });
}))).then(() => parentPort.postMessage('bound'), (err) => parentPort.postMessage({ error: String((err && err.message) || err) }));
parentPort.on('message', (m) => {
  if (m !== 'close') return;
  let open = sockets.length;
  const closed = () => {
    if (spill.length > 0) setTimeout(closed, 5);
    else parentPort.postMessage('closed');
  };
  for (const s of sockets) s.close(() => { if (--open === 0) closed(); });
});
`;
/** Datagrams the ring holds: at 20,000 a second, 3 s of a stalled main thread (3 MB). */
const RING_ENTRIES = 1 << 16;
/** Per datagram: worker, call index, sequence, send time, flags, arrival time, source port (Envoy's session). */
const RING_FIELDS = 7;
const RING_READ_MS = 5;

/** The UDP sinks and TCP health ports of the worker pods. */
export class WorkerSinks {
  private thread?: Worker;
  private reader?: NodeJS.Timeout;
  private readonly health = new Map<string, TcpPort>();
  private readonly ring = new SharedArrayBuffer(16 + RING_ENTRIES * RING_FIELDS * 8);
  private readonly head = new Int32Array(this.ring, 0, 4);
  private readonly data = new Float64Array(this.ring, 16);
  private read = 0;
  private names: string[] = [];
  /** Datagrams received whose call index is unknown (from another run, say). */
  get strays(): number {
    return Atomics.load(this.head, 2);
  }
  onDatagram: (worker: string, index: number, seq: number, sentAt: number, probe: boolean, at: number, sourcePort: number) => void = () => undefined;

  static async start(workers: readonly WorkerSpec[], sinkPort: number, healthPort: number): Promise<WorkerSinks> {
    const sinks = new WorkerSinks();
    try {
      for (const w of workers) {
        const health = new TcpPort(w.ip, healthPort);
        await health.listen();
        sinks.health.set(w.name, health);
      }
      sinks.names = workers.map((w) => w.name);
      const workerData = {
        ips: workers.map((w) => w.ip),
        port: sinkPort,
        payloadBytes: PAYLOAD_BYTES,
        // Many calls at 10/s each: do not drop datagrams in the socket buffer (capped by net.core.rmem_max).
        rcvbuf: 8 << 20,
        nice: Number(process.env['B5_SINK_NICE'] ?? 0),
        ring: sinks.ring,
        fields: RING_FIELDS,
      };
      const thread = new Worker(SINK_THREAD, { eval: true, workerData });
      sinks.thread = thread;
      await new Promise<void>((resolve, reject) => {
        const failed = (err: Error) => {
          thread.off('message', onMessage);
          reject(err);
        };
        const exited = (code: number) => failed(new Error(`the sinks' thread exited (${code})`));
        const onMessage = (m: unknown) => {
          if (m === 'bound') {
            thread.off('message', onMessage).off('error', failed).off('exit', exited);
            resolve();
          } else if (typeof m === 'object' && m !== null && 'error' in m) failed(new Error(`worker sinks: ${(m as { error: string }).error}`));
        };
        thread.on('message', onMessage).once('error', failed).once('exit', exited);
      });
      thread.on('error', (err) => {
        // The rig's measurements would be wrong from here on: fail loudly.
        throw err;
      });
      sinks.reader = setInterval(() => sinks.drain(), RING_READ_MS);
    } catch (err) {
      await sinks.close();
      throw err;
    }
    return sinks;
  }

  /** Hands every datagram in the ring to onDatagram. */
  private drain(): void {
    const written = Atomics.load(this.head, 0);
    const d = this.data;
    let r = this.read;
    while (r !== written) {
      const o = (r & (RING_ENTRIES - 1)) * RING_FIELDS;
      this.onDatagram(this.names[d[o] as number] as string, d[o + 1] as number, d[o + 2] as number, d[o + 3] as number, ((d[o + 4] as number) & FLAG_PROBE) !== 0, d[o + 5] as number, d[o + 6] as number);
      r = (r + 1) | 0;
    }
    this.read = r;
    Atomics.store(this.head, 1, r);
  }

  /** Stops (false) or starts again (true) answering a worker's health port; its UDP sink keeps receiving. */
  async setHealth(worker: string, up: boolean): Promise<void> {
    const health = this.health.get(worker);
    if (!health) throw new Error(`no worker ${worker}`);
    await (up ? health.listen() : health.close());
  }

  async close(): Promise<void> {
    const thread = this.thread;
    this.thread = undefined;
    if (thread) {
      // The thread says it closed once all it received is in the ring (read on meanwhile).
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 5_000);
        const done = () => {
          clearTimeout(timer);
          resolve();
        };
        thread.once('exit', done);
        thread.on('message', (m) => m === 'closed' && done());
        thread.postMessage('close');
      });
      await thread.terminate();
    }
    clearInterval(this.reader);
    this.drain();
    for (const h of this.health.values()) await h.close();
    this.health.clear();
  }
}

export interface CallLoadOptions {
  readonly kubeconfigPath: string;
  readonly namespace?: string;
  /** Labels of the ingress proxy the VirtualServices select. */
  readonly proxySelector: Record<string, string>;
  /** Labels of the worker pods. */
  readonly workerSelector: Record<string, string>;
  readonly sinkPort: number;
  readonly healthPort: number;
  readonly healthIntervalMs?: number;
  /** Listener ports, shared by the loads of one Envoy (so a port's reuse is known across them). */
  readonly ports: PortPool;
  /** Measure teardown on every n-th call (1: all; 0: none). */
  readonly teardownSampleEvery: number;
  /** How long to probe a deleted call's port at most. */
  readonly probeMaxMs?: number;
  /** A hash_key other than the call's name (tests break it on purpose: "" leaves it out). */
  readonly hashKey?: (name: string) => string;
  /** First call index (names are call-<index>); calls of several runs in one API server stay distinct. */
  readonly firstIndex?: number;
  /**
   * Sockets (Envoy sessions) per call, each sending on every beat: with 2, the streams of a
   * call (RTP and RTCP, say) land on one worker only through the hash key. Default 1.
   */
  readonly socketsPerCall?: number;
  /**
   * A create or delete that fails for want of an API server (connection refused, 5xx, 429) is
   * sent again every 250 ms for up to this long, as a controller retries (default 0: not at all).
   * A retried create answered 409 (the first one got through) and a delete answered 404 succeeded.
   */
  readonly retryApiForMs?: number;
}

export interface CallPlan {
  /** The call ends this long after its create request (if connected by then). */
  readonly lifetimeMs: number;
  /** A call not connected at the end of its lifetime keeps trying until this long after its create. */
  readonly connectDeadlineMs: number;
  /** A call that connected late still lives at least this long after connecting. */
  readonly minHoldMs: number;
}

/** The VirtualService of one call. */
export function callVirtualService(name: string, port: number, o: Pick<CallLoadOptions, 'namespace' | 'proxySelector' | 'workerSelector' | 'sinkPort' | 'healthPort' | 'healthIntervalMs' | 'hashKey'>): object {
  const hashKey = o.hashKey ? o.hashKey(name) : name;
  return {
    apiVersion: `${GROUP}/${VERSION}`,
    kind: 'VirtualService',
    metadata: { name, namespace: o.namespace ?? 'default' },
    spec: {
      selector: o.proxySelector,
      listeners: [
        {
          name: `${name}-l`,
          udp: {
            port,
            cluster: {
              name: `${name}-c`,
              service_discovery: 'eds',
              ...(hashKey ? { hash_key: hashKey } : {}),
              health_check: { interval: o.healthIntervalMs ?? 500, protocol: 'TCP' },
              endpoints: [{ name: 'worker', host: { selector: o.workerSelector }, port: o.sinkPort, health_check_port: o.healthPort }],
            },
          },
        },
      ],
    },
  };
}

interface ActiveCall {
  readonly record: CallRecord;
  readonly plan: CallPlan;
  readonly sockets: UdpSocket[];
  state: 'sending' | 'stopped' | 'probing';
  lastSentAt: number;
}

/** The calls: creates, datagrams, deletes, all paced by one timer. */
export class CallLoad {
  readonly records: CallRecord[] = [];
  private readonly byIndex = new Map<number, CallRecord>();
  private readonly active = new Set<ActiveCall>();
  private readonly pool: PortPool;
  /** The controller's API client: keep-alive connections, as client-go's (client-node's generated client opens a TLS connection per request). */
  private readonly api: KubeHttp;
  private readonly namespace: string;
  private nextIndex: number;
  private timer?: NodeJS.Timeout;
  private idleWaiters: Array<() => void> = [];
  poolExhausted = 0;

  constructor(
    private readonly options: CallLoadOptions,
    sinks: WorkerSinks,
  ) {
    const kc = new KubeConfig();
    kc.loadFromFile(options.kubeconfigPath);
    this.api = new KubeHttp(kc);
    this.namespace = options.namespace ?? 'default';
    this.pool = options.ports;
    this.nextIndex = options.firstIndex ?? 1;
    sinks.onDatagram = (worker, index, seq, sentAt, probe, at, sourcePort) => this.receive(worker, index, seq, sentAt, probe, at, sourcePort);
  }

  get activeCalls(): number {
    return this.active.size;
  }

  get lastIndex(): number {
    return this.nextIndex - 1;
  }

  /** A datagram a sink received (the sinks call it; loads sharing sinks are handed each datagram, and take only their own calls'). */
  receive(worker: string, index: number, seq: number, sentAt: number, probe: boolean, at: number, sourcePort: number): void {
    const r = this.byIndex.get(index);
    if (!r) return;
    // Late: after the call ended (its port went to another call), or long after it was sent.
    // It sat in a socket buffer (a removed listener's socket that a new listener on the port
    // took over), or Envoy or this process were that slow.
    const late = at - sentAt > STALE_MS || (r.doneAt !== undefined && at >= r.doneAt);
    if (late) r.stale += 1;
    if (probe) {
      // Teardown counts only probes forwarded by a running listener.
      if (late) return;
      if (r.lastProbeArrivedSentAt === undefined || sentAt > r.lastProbeArrivedSentAt) r.lastProbeArrivedSentAt = sentAt;
      r.lastProbeArrivalAt = at;
      if (DEBUG && r.deleteSentAt !== undefined) ((r as any).probeArrivals ??= []).push([Math.round(sentAt - r.deleteSentAt), Math.round(at - r.deleteSentAt), worker]);
      return;
    }
    r.received += 1;
    r.workers.add(worker);
    const w = (r.byWorker[worker] ??= { n: 0, firstMs: at - r.createSentAt, lastMs: 0 });
    w.n += 1;
    w.lastMs = at - r.createSentAt;
    if (r.firstAt === undefined) {
      r.firstAt = at;
      r.firstSeq = seq;
      if (r.reusedPort) {
        const previous = this.pool.lastHolderOf(r.port);
        r.firstThroughOwn = previous !== undefined && previous.firstAt !== undefined && finalWorker(previous) !== worker;
      }
    }
    // Only a session first seen in the hand-over window can be the call's own listener's, so
    // only then is it worth a string and a lookup per datagram.
    const session = handingOver(r, at) ? `${worker}:${sourcePort}` : undefined;
    if (session !== undefined && !r.sessions.has(session)) {
      r.sessions.set(session, at);
      const beat = (q: number) => Math.floor(q / (this.options.socketsPerCall ?? 1));
      if (beat(seq) > beat(r.firstSeq as number)) r.newSessionAt = at;
    }
    markArrived(r, seq, at);
  }

  /** Starts one call now: its socket sends at once, and its VirtualService create request is sent. Undefined when no port is free. */
  start(plan: CallPlan): CallRecord | undefined {
    const port = this.pool.take();
    if (port === undefined) {
      this.poolExhausted += 1;
      return undefined;
    }
    const index = this.nextIndex++;
    const name = `call-${index}`;
    const sampleEvery = this.options.teardownSampleEvery;
    const record: CallRecord = {
      index,
      name,
      port,
      reusedPort: this.pool.used(port),
      sampled: sampleEvery > 0 && index % sampleEvery === 0,
      createSentAt: now(),
      workers: new Set(),
      byWorker: {},
      sessions: new Map(),
      seq: 0,
      sentAt: [],
      arrived: [],
      received: 0,
      probesSent: 0,
      stale: 0,
    };
    this.records.push(record);
    this.byIndex.set(index, record);
    const sockets: UdpSocket[] = [];
    for (let i = 0; i < (this.options.socketsPerCall ?? 1); i++) {
      const socket = createSocket('udp4');
      // A datagram to a port nobody listens on yet comes back as an ICMP error: not a failure.
      socket.on('error', () => undefined);
      sockets.push(socket);
    }
    const call: ActiveCall = { record, plan, sockets, state: 'sending', lastSentAt: 0 };
    this.active.add(call);
    this.ensureTimer();
    this.send(call, false);
    record.createSentAt = now();
    this.retried(() => this.api.request('POST', this.collection(), json(callVirtualService(name, port, this.options))), 409)
      .then(
        () => (record.createDoneAt = now()),
        (err: unknown) => {
          record.createDoneAt = now();
          record.createError = describe(err);
        },
      );
    return record;
  }

  private collection(): string {
    return `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(this.namespace)}/${PLURAL}`;
  }

  /** Resolves once no call is active any more (every call deleted, probed and its port freed). */
  idle(): Promise<void> {
    if (this.active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    for (const c of this.active) for (const s of c.sockets) s.close();
    this.active.clear();
    this.api.destroy();
  }

  private ensureTimer(): void {
    this.timer ??= setInterval(() => this.tick(), TICK_MS);
  }

  private send(call: ActiveCall, probe: boolean): void {
    const r = call.record;
    for (const socket of call.sockets) {
      const seq = r.seq++;
      if (probe) r.stopSeq ??= seq;
      r.sentAt.push(now());
      // A fresh buffer per datagram: dgram may send asynchronously (its first send binds).
      const b = Buffer.allocUnsafe(PAYLOAD_BYTES);
      b.writeUInt32BE(r.index, 0);
      b.writeUInt32BE(seq, 4);
      b.writeDoubleBE(now(), 8);
      b.writeUInt8(probe ? FLAG_PROBE : 0, 16);
      socket.send(b, r.port, '127.0.0.1');
      if (probe) r.probesSent += 1;
    }
    call.lastSentAt = now();
  }

  private tick(): void {
    const t = now();
    for (const call of this.active) {
      const r = call.record;
      const p = call.plan;
      if (call.state === 'sending') {
        const connected = r.firstAt !== undefined;
        let stopAt = r.createSentAt + p.lifetimeMs - STOP_BEFORE_DELETE_MS;
        if (connected) stopAt = Math.max(stopAt, Math.min((r.firstAt as number) + p.minHoldMs, r.createSentAt + p.connectDeadlineMs) - STOP_BEFORE_DELETE_MS);
        else stopAt = Math.max(stopAt, r.createSentAt + p.connectDeadlineMs - STOP_BEFORE_DELETE_MS);
        // Never delete before the create answered: the delete would race it.
        if (t >= stopAt && r.createDoneAt !== undefined) {
          call.state = 'stopped';
          r.stopAt = t;
          continue;
        }
        let interval = t - r.createSentAt < SLOW_CONNECTING_AFTER_MS ? CONNECTING_INTERVAL_MS : SLOW_CONNECTING_INTERVAL_MS;
        if (connected) interval = !r.firstThroughOwn && handingOver(r, t) ? CONNECTING_INTERVAL_MS : ESTABLISHED_INTERVAL_MS;
        if (t - call.lastSentAt >= interval - 1) this.send(call, false);
      } else if (call.state === 'stopped') {
        if (r.deleteSentAt === undefined && t - (r.stopAt as number) >= STOP_BEFORE_DELETE_MS) this.delete(call);
      } else if (call.state === 'probing') {
        const deleted = r.deleteSentAt as number;
        const quietFor = t - (r.lastProbeArrivalAt ?? deleted);
        if ((t - deleted >= 1000 && quietFor >= 500 && r.deleteDoneAt !== undefined) || t - deleted >= (this.options.probeMaxMs ?? 15_000)) this.finish(call);
        else if (t - call.lastSentAt >= CONNECTING_INTERVAL_MS - 1) this.send(call, true);
      }
    }
  }

  private delete(call: ActiveCall): void {
    const r = call.record;
    r.deleteSentAt = now();
    if (r.createError !== undefined) {
      r.deleteDoneAt = r.deleteSentAt;
      this.finish(call);
      return;
    }
    if (r.sampled) {
      call.state = 'probing';
      this.send(call, true);
    }
    this.retried(() => this.api.request('DELETE', `${this.collection()}/${r.name}`), 404).then(
      () => {
        r.deleteDoneAt = now();
        if (!r.sampled) this.finish(call);
      },
      (err: unknown) => {
        r.deleteDoneAt = now();
        r.deleteError = describe(err);
        if (!r.sampled) this.finish(call);
      },
    );
  }

  /** `request`, sent again while the API server is away (see retryApiForMs); `done` is the status a retry may get when an earlier attempt got through. */
  private async retried(request: () => Promise<unknown>, done: number): Promise<void> {
    const until = now() + (this.options.retryApiForMs ?? 0);
    for (let attempt = 0; ; attempt++) {
      try {
        await request();
        return;
      } catch (err) {
        // An HTTP status from the API server, or a socket error's code (ECONNREFUSED, ...).
        const code = (err as { code?: unknown }).code;
        if (attempt > 0 && code === done) return;
        const transient = typeof code !== 'number' || code === 429 || code >= 500;
        if (!transient || now() >= until) throw err;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }

  private finish(call: ActiveCall): void {
    if (!this.active.delete(call)) return;
    const r = call.record;
    r.doneAt = now();
    for (const s of call.sockets) s.close();
    this.pool.give(r.port, r);
    if (this.active.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }
}

function describe(err: unknown): string {
  const e = err as { code?: number; body?: unknown; message?: string };
  return `${e.code ?? ''} ${e.message ?? String(err)}`.trim().slice(0, 300);
}

// --------------------------------------------------------------------------------------------
// Running a load and summarising it
// --------------------------------------------------------------------------------------------

/** Starts `rate` calls per second for `arrivalsMs` (or until `until` aborts), each with `plan`; resolves when the last call ended. */
export async function runArrivals(load: CallLoad, rate: number, arrivalsMs: number, plan: CallPlan, until?: AbortSignal): Promise<void> {
  const t0 = now();
  let total = Math.round((rate * arrivalsMs) / 1000);
  let started = 0;
  await new Promise<void>((resolve) => {
    // Catch up on every tick, so that a late timer still gives the planned number of arrivals.
    const timer = setInterval(() => {
      if (until?.aborted) total = started;
      const due = Math.min(total, Math.floor(((now() - t0) * rate) / 1000) + 1);
      while (started < due) {
        started += 1;
        load.start(plan);
      }
      if (started >= total) {
        clearInterval(timer);
        resolve();
      }
    }, Math.max(1, Math.min(10, Math.floor(1000 / rate))));
  });
  await load.idle();
}

/** One call at a time: the next starts once the previous one ended (and was probed). */
export async function runSequential(load: CallLoad, calls: number, plan: CallPlan): Promise<void> {
  for (let i = 0; i < calls; i++) {
    load.start(plan);
    await load.idle();
  }
}

export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] as number;
}

export interface CallSummary {
  calls: number;
  created: number;
  createErrors: number;
  deleteErrors: number;
  connected: number;
  neverConnected: number;
  setupMs: { p50: number; p99: number; max: number };
  teardownMs: { p50: number; p99: number; max: number; samples: number };
  /**
   * Datagrams sent after the call's first one through its own listener arrived (the first at
   * the worker it ended on), and how many of those never arrived.
   */
  established: { sent: number; lost: number; callsWithLoss: number };
  /**
   * Calls whose first datagrams went through the previous call's listener on their reused port
   * and that lost datagrams after that first arrival but before their own listener took over
   * (the old listener gone, the new one not yet running), and how many.
   */
  handoverLoss: { calls: number; lost: number };
  /** Calls whose datagrams reached more than one worker. */
  split: number;
  /** Of those, calls on a port no call had before (a hash-key failure), and on a reused port. */
  splitFreshPort: number;
  splitReusedPort: number;
  /**
   * Split calls on a reused port whose other worker is the final worker of the previous call on
   * that port: the previous call's listener, still running, forwarded the new call's first
   * datagrams until the new listener replaced it.
   */
  splitViaPreviousListener: number;
  /** Create → first datagram through the call's own listener (ownFirstAt). */
  ownSetupMs: { p50: number; p99: number; max: number };
  /** Calls that got a port another call had used, and how many of them connected. */
  reusedPort: { calls: number; connected: number };
  poolExhausted: number;
  /**
   * Datagrams that arrived more than 200 ms after they were sent: they waited in the socket of
   * a removed listener, which a later listener on the same port took over and read.
   */
  staleDatagrams: number;
  /** Calls per worker (by the first worker reached). */
  perWorker: Record<string, number>;
}

export function summarize(records: readonly CallRecord[], poolExhausted = 0): CallSummary {
  const created = records.filter((r) => r.createError === undefined);
  const connected = created.filter((r) => r.firstAt !== undefined);
  const setup = connected.map((r) => (r.firstAt as number) - r.createSentAt);
  // Only calls that connected: a listener that never forwarded has no teardown to time.
  const teardown = connected
    .filter((r) => r.sampled && r.deleteSentAt !== undefined && r.deleteError === undefined)
    .map((r) => Math.max(0, (r.lastProbeArrivedSentAt ?? (r.deleteSentAt as number)) - (r.deleteSentAt as number)));
  let sent = 0;
  let lost = 0;
  let callsWithLoss = 0;
  const handover = { calls: 0, lost: 0 };
  const perWorker: Record<string, number> = {};
  for (const r of connected) {
    const own = ownFirstAt(r) as number;
    // Established: from the first datagram through the call's own listener (see ownFirstAt).
    const l = lostBetween(r, own);
    sent += sentBetween(r, own);
    lost += l;
    if (l > 0) callsWithLoss += 1;
    // Before that, on a reused port, the previous call's listener forwarded the first datagrams.
    const h = lostBetween(r, r.firstAt as number) - l;
    if (h > 0) {
      handover.calls += 1;
      handover.lost += h;
    }
    const w = finalWorker(r) as string;
    perWorker[w] = (perWorker[w] ?? 0) + 1;
  }
  const reused = created.filter((r) => r.reusedPort);
  const split = connected.filter((r) => r.workers.size > 1);
  const previous = previousOnPort(records);
  const ownSetup = connected.map((r) => (ownFirstAt(r) as number) - r.createSentAt);
  return {
    calls: records.length,
    created: created.length,
    createErrors: records.length - created.length,
    deleteErrors: records.filter((r) => r.deleteError !== undefined).length,
    connected: connected.length,
    neverConnected: created.length - connected.length,
    setupMs: { p50: quantile(setup, 0.5), p99: quantile(setup, 0.99), max: setup.length ? Math.max(...setup) : NaN },
    teardownMs: { p50: quantile(teardown, 0.5), p99: quantile(teardown, 0.99), max: teardown.length ? Math.max(...teardown) : NaN, samples: teardown.length },
    established: { sent, lost, callsWithLoss },
    handoverLoss: handover,
    split: split.length,
    splitFreshPort: split.filter((r) => !r.reusedPort).length,
    splitReusedPort: split.filter((r) => r.reusedPort).length,
    splitViaPreviousListener: split.filter((r) => {
      const prev = previous.get(r);
      const prevWorker = prev && finalWorker(prev);
      const final = finalWorker(r);
      return r.reusedPort && prevWorker !== undefined && [...r.workers].every((w) => w === final || w === prevWorker);
    }).length,
    ownSetupMs: { p50: quantile(ownSetup, 0.5), p99: quantile(ownSetup, 0.99), max: ownSetup.length ? Math.max(...ownSetup) : NaN },
    reusedPort: { calls: reused.length, connected: reused.filter((r) => r.firstAt !== undefined).length },
    poolExhausted,
    staleDatagrams: records.reduce((n, r) => n + r.stale, 0),
    perWorker,
  };
}

/** The worker a call's last datagram reached: the one its own listener hashes it to. */
export function finalWorker(r: CallRecord): string | undefined {
  let best: string | undefined;
  let last = -Infinity;
  for (const [w, x] of Object.entries(r.byWorker)) {
    if (x.lastMs > last) {
      last = x.lastMs;
      best = w;
    }
  }
  return best;
}

/** For each call on a reused port, the call that had the port before it. */
export function previousOnPort(records: readonly CallRecord[]): Map<CallRecord, CallRecord> {
  const last = new Map<number, CallRecord>();
  const out = new Map<CallRecord, CallRecord>();
  for (const r of [...records].sort((a, b) => a.createSentAt - b.createSentAt)) {
    const prev = last.get(r.port);
    if (prev) out.set(r, prev);
    last.set(r.port, r);
  }
  return out;
}

function markArrived(r: CallRecord, seq: number, at: number): void {
  const chunk = seq >> 10;
  while (r.arrived.length <= chunk) r.arrived.push(new Float64Array(1024));
  (r.arrived[chunk] as Float64Array)[seq & 1023] = at;
}

function arrivedAt(r: CallRecord, seq: number): number {
  return r.arrived[seq >> 10]?.[seq & 1023] ?? 0;
}

function hasArrived(r: CallRecord, seq: number): boolean {
  return arrivedAt(r, seq) > 0;
}

/**
 * A connected call on a reused port, at time t, whose own listener's session has not been seen and
 * whose first arrival was at most HANDOVER_FAST_MS ago: the previous call's listener may still be
 * the one forwarding.
 */
function handingOver(r: CallRecord, t: number): boolean {
  return r.reusedPort && r.firstAt !== undefined && r.newSessionAt === undefined && t - r.firstAt <= HANDOVER_FAST_MS;
}

/** Arrivals this far apart on a reused port mean the previous call's listener went and the call's own came. */
const HANDOVER_GAP_MS = 250;
/** ... and a silence that starts later than this after the create is no handover. */
const HANDOVER_WINDOW_MS = 10_000;

/** Datagrams (not probes) sent after `from`. */
function sentBetween(r: CallRecord, from: number): number {
  let n = 0;
  const end = r.stopSeq ?? r.seq;
  for (let seq = 0; seq < end; seq++) if ((r.sentAt[seq] as number) > from) n += 1;
  return n;
}

/** Datagrams (not probes) sent after `from` that never arrived. */
export function lostBetween(r: CallRecord, from: number): number {
  let n = 0;
  const end = r.stopSeq ?? r.seq;
  for (let seq = 0; seq < end; seq++) if ((r.sentAt[seq] as number) > from && !hasArrived(r, seq)) n += 1;
  return n;
}

/**
 * When the call's datagrams started going through its own listener. On a fresh port, the first
 * arrival. On a reused port the previous call's listener may have forwarded the first ones (to
 * its worker, which the hash may or may not make this call's): then the latest of the first
 * arrival through an Envoy session that began later (newSessionAt: a listener of its own has
 * sessions of its own), the first arrival at the worker the call ended on, and the first arrival
 * after the last silence of HANDOVER_GAP_MS or more (the previous listener removed, this one not
 * yet running; datagrams sent meanwhile are lost or, buffered in the old socket, arrive in a burst
 * at the takeover).
 */
export function ownFirstAt(r: CallRecord): number | undefined {
  if (r.firstAt === undefined) return undefined;
  if (!r.reusedPort) return r.firstAt;
  const w = finalWorker(r) as string;
  let own = Math.max(r.createSentAt + (r.byWorker[w] as { firstMs: number }).firstMs, r.newSessionAt ?? 0);
  const end = r.stopSeq ?? r.seq;
  const times: number[] = [];
  for (let seq = 0; seq < end; seq++) {
    const at = arrivedAt(r, seq);
    if (at > 0) times.push(at);
  }
  times.sort((a, b) => a - b);
  // Only early silences: the handover follows the previous call's delete, which came before
  // this call's create; a silence later on is loss.
  for (let i = 1; i < times.length && (times[i - 1] as number) < r.createSentAt + HANDOVER_WINDOW_MS; i++) {
    if ((times[i] as number) - (times[i - 1] as number) >= HANDOVER_GAP_MS) own = Math.max(own, times[i] as number);
  }
  return own;
}

// --------------------------------------------------------------------------------------------
// Calls around a fault
// --------------------------------------------------------------------------------------------

/** Calls connected before t and still sending at t. */
export function establishedAt(records: readonly CallRecord[], t: number): CallRecord[] {
  return records.filter((r) => r.firstAt !== undefined && r.firstAt < t && (r.stopAt ?? Infinity) > t);
}

/**
 * Established calls on `worker` at t (and still sending `settleMs` later, so that they had time
 * to move if they were going to), what became of them, and of the calls created after t.
 */
export function workerFault(records: readonly CallRecord[], worker: string, t: number, settleMs = 0) {
  const onIt = establishedAt(records, t).filter((r) => (r.stopAt ?? Infinity) > t + settleMs && r.byWorker[worker] !== undefined && r.createSentAt + (r.byWorker[worker] as { firstMs: number }).firstMs < t);
  const elsewhereAfter = (r: CallRecord) => Object.entries(r.byWorker).filter(([w, x]) => w !== worker && r.createSentAt + x.lastMs > t);
  const moved = onIt.filter((r) => elsewhereAfter(r).length > 0);
  const moveMs = moved.map((r) => Math.min(...elsewhereAfter(r).map(([, x]) => r.createSentAt + x.firstMs)) - t).filter((ms) => ms >= 0);
  const lastOnItMs = onIt.map((r) => r.createSentAt + (r.byWorker[worker] as { lastMs: number }).lastMs - t);
  const newer = records.filter((r) => r.createSentAt > t);
  return {
    onIt: onIt.length,
    moved: moved.length,
    moveMsP50: quantile(moveMs, 0.5),
    moveMsMax: moveMs.length ? Math.max(...moveMs) : NaN,
    /** How long after the fault the worker still received datagrams of the calls it had. */
    lastOnItMsMax: lastOnItMs.length ? Math.max(...lastOnItMs) : NaN,
    lostOnIt: summarize(onIt).established.lost,
    newCalls: newer.length,
    newCallsOnIt: newer.filter((r) => r.workers.has(worker)).length,
    newCallsOnItAfter1s: newer.filter((r) => r.createSentAt > t + 1000 && r.workers.has(worker)).length,
  };
}
