/**
 * Loopback UDP and TCP stand-ins for the pods of a media pipeline: echo servers that say who
 * they are, TCP health-check ports that can be closed and reopened, and clients that send
 * datagrams and wait for the answer. Every 127.x.y.z address is local on Linux, so each "pod"
 * gets its own IP and ports never clash between pods.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket as TcpSocket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep, waitUntil } from './wait.js';

/** Echoes every datagram back to its sender as `<name>|<payload>`. */
export class UdpEcho {
  private socket?: UdpSocket;
  /** `ip:port` of everyone that sent it a datagram: behind a proxy, one per upstream session. */
  readonly senders = new Set<string>();

  private constructor(
    readonly name: string,
    readonly address: string,
    readonly port: number,
  ) {}

  static async start(name: string, address: string, port: number): Promise<UdpEcho> {
    const echo = new UdpEcho(name, address, port);
    const socket = createSocket('udp4');
    socket.on('message', (msg, rinfo) => {
      echo.senders.add(`${rinfo.address}:${rinfo.port}`);
      socket.send(Buffer.concat([Buffer.from(`${name}|`), msg]), rinfo.port, rinfo.address);
    });
    await bind(socket, port, address);
    // A reply to a sender that is gone is no failure of the echo.
    socket.on('error', () => undefined);
    echo.socket = socket;
    return echo;
  }

  close(): Promise<void> {
    const socket = this.socket;
    this.socket = undefined;
    return new Promise((resolve) => (socket ? socket.close(() => resolve()) : resolve()));
  }
}

/** A TCP port that accepts connections (a health check passes) until closed. */
export class TcpPort {
  private server?: Server;
  private readonly sockets = new Set<TcpSocket>();

  constructor(
    readonly address: string,
    readonly port: number,
  ) {}

  async listen(): Promise<void> {
    if (this.server) return;
    const server = createServer((socket) => {
      this.sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, this.address, () => resolve());
    });
    this.server = server;
  }

  /** Stops accepting: the next connect is refused, as with a crashed worker. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/**
 * One client socket (one Envoy session per listener it sends to), bound to `from`: each 127.x.y.z
 * is a client of its own. `request` sends a datagram and resolves with the next reply, or
 * undefined when none came within timeoutMs.
 */
export class UdpClient {
  private waiting?: (reply: string | undefined) => void;
  readonly replies: string[] = [];

  private constructor(private readonly socket: UdpSocket) {
    socket.on('message', (msg) => {
      const text = msg.toString();
      this.replies.push(text);
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting?.(text);
    });
  }

  static async open(from = '127.0.0.1', port = 0): Promise<UdpClient> {
    const socket = createSocket('udp4');
    socket.on('error', () => undefined);
    await bind(socket, port, from);
    return new UdpClient(socket);
  }

  get address(): string {
    const { address, port } = this.socket.address();
    return `${address}:${port}`;
  }

  send(port: number, payload: string): void {
    this.socket.send(payload, port, '127.0.0.1');
  }

  request(port: number, payload: string, timeoutMs = 3_000): Promise<string | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        resolve(undefined);
      }, timeoutMs);
      this.waiting = (reply) => {
        clearTimeout(timer);
        resolve(reply);
      };
      this.send(port, payload);
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

/**
 * Sends `payload` from a fresh socket (so a fresh Envoy UDP session) on `from` to 127.0.0.1:port
 * and resolves with the first reply, or undefined when none came within timeoutMs.
 */
export async function udpRoundTrip(port: number, payload: string, timeoutMs = 3_000, from = '127.0.0.1'): Promise<string | undefined> {
  const client = await UdpClient.open(from);
  try {
    return await client.request(port, payload, timeoutMs);
  } finally {
    await client.close();
  }
}

/** Which echo answered a round trip (`<name>|...`), or undefined. */
export function answeredBy(reply: string | undefined): string | undefined {
  return reply === undefined ? undefined : reply.slice(0, reply.indexOf('|'));
}

/**
 * Retries fresh-socket round trips until one is answered (a listener can take a moment to
 * appear, and the first datagrams of a session can race an endpoint update).
 */
export async function udpEventually(port: number, payload: string, timeoutMs = 20_000, accept: (reply: string) => boolean = () => true): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last: string | undefined;
  for (;;) {
    last = await udpRoundTrip(port, payload, 300);
    if (last !== undefined && accept(last)) return last;
    if (Date.now() > deadline) throw new Error(`no acceptable UDP reply from 127.0.0.1:${port} within ${timeoutMs} ms (last reply: ${JSON.stringify(last)})`);
    await sleep(100);
  }
}

/**
 * One long-lived client socket (one Envoy session) that sends a numbered datagram every
 * intervalMs and counts the answers: traffic that must keep flowing while things change.
 */
export class UdpStream {
  sent = 0;
  readonly replies: string[] = [];
  private timer?: NodeJS.Timeout;

  private constructor(
    private readonly socket: UdpSocket,
    readonly port: number,
  ) {}

  static async start(port: number, intervalMs = 50): Promise<UdpStream> {
    const socket = createSocket('udp4');
    socket.on('error', () => undefined);
    await bind(socket, 0, '127.0.0.1');
    const stream = new UdpStream(socket, port);
    socket.on('message', (msg) => stream.replies.push(msg.toString()));
    stream.timer = setInterval(() => socket.send(`seq ${stream.sent++}`, port, '127.0.0.1'), intervalMs);
    return stream;
  }

  /** Resolves once `count` more replies arrived than when called. */
  async moreReplies(count: number, timeoutMs = 10_000): Promise<void> {
    const target = this.replies.length + count;
    await waitUntil(() => this.replies.length >= target, `${count} more UDP replies on port ${this.port} (have ${this.replies.length})`, timeoutMs);
  }

  /** Stops sending; replies still arrive until stop. */
  pause(): void {
    clearInterval(this.timer);
  }

  stop(): void {
    clearInterval(this.timer);
    this.socket.close();
  }
}

function bind(socket: UdpSocket, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, address, () => {
      socket.off('error', reject);
      resolve();
    });
  });
}

/** A UDP socket bound to 0.0.0.0:port without SO_REUSEPORT, so nobody else can bind the port. */
export async function holdUdpPort(port: number): Promise<{ close(): Promise<void> }> {
  const socket = createSocket({ type: 'udp4', reuseAddr: false });
  await bind(socket, port, '0.0.0.0');
  return { close: () => new Promise((resolve) => socket.close(() => resolve())) };
}

/** Whether this process could bind 0.0.0.0:port over UDP right now (nobody else holds it). */
export async function udpPortFree(port: number): Promise<boolean> {
  try {
    await (await holdUdpPort(port)).close();
    return true;
  } catch {
    return false;
  }
}

async function tcpPortFree(port: number): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '0.0.0.0', () => server.close(() => resolve(true)));
  });
}

// Ports handed out by any test process on this machine: a lock file per port, naming the pid
// that holds it. Test files run in parallel processes (and whole suites may run side by side),
// and a port checked free is not bound until an Envoy gets its listener, so without a claim two
// processes could pick the same port in that window.
const CLAIMS = join(tmpdir(), 'vsxds-test-ports');
const claimed = new Set<number>();
let releaseOnExit = false;

let swept = false;

function claim(port: number): boolean {
  if (!swept) {
    swept = true;
    sweepClaims();
  }
  const file = join(CLAIMS, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' });
      claimed.add(port);
      if (!releaseOnExit) {
        releaseOnExit = true;
        process.on('exit', () => {
          for (const p of claimed) rmSync(join(CLAIMS, String(p)), { force: true });
        });
      }
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let owner: number;
      try {
        owner = Number(readFileSync(file, 'utf8').trim());
      } catch {
        continue;
      }
      // An empty file is one being written right now.
      if (!(owner > 0) || alive(owner)) return false;
      // Left behind by a test process that was killed: take it over.
      rmSync(file, { force: true });
    }
  }
  return false;
}

/** Test workers are often killed rather than exited, so their claims outlive them: drop those. */
function sweepClaims(): void {
  mkdirSync(CLAIMS, { recursive: true });
  for (const name of readdirSync(CLAIMS)) {
    try {
      const owner = Number(readFileSync(join(CLAIMS, name), 'utf8').trim());
      if (owner > 0 && !alive(owner)) rmSync(join(CLAIMS, name), { force: true });
    } catch {
      // Gone already, or being written: leave it.
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A port that is free for UDP and TCP on every address and claimed for this process. Picked at
 * random below the kernel's ephemeral range (32768+), where Envoy's upstream sockets and other
 * tests' port-0 sockets land, so nobody else binds it before the test does.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 500; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (claimed.has(port) || !(await udpPortFree(port)) || !(await tcpPortFree(port))) continue;
    if (claim(port)) return port;
  }
  throw new Error('no free port found in 20000-31999');
}

export async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  return ports;
}

export { sleep, waitUntil };
