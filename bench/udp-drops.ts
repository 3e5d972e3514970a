/**
 * Where the machine dropped UDP datagrams for want of receive buffer: Linux counts them in all
 * (`RcvbufErrors` in /proc/net/snmp) and per socket (`drops` in /proc/net/udp). A datagram a
 * call lost was dropped by the kernel at a socket whose reader did not keep up (a worker's sink
 * in the rig, or Envoy's listener for the call), or by Envoy itself (no healthy worker, a
 * listener gone); these counters tell the first apart, and whether the rig's sinks fell behind.
 *
 * The sinks live through the run, so their counters are read at its start and end only: reading
 * /proc/net/udp walks the kernel's whole UDP table, which with a few thousand sockets costs the
 * rig CPU and holds the table's locks; a per-second reading slowed the run it measured.
 */
import { readFileSync } from 'node:fs';

export interface UdpDrops {
  /** RcvbufErrors over the run, every UDP socket of the machine. */
  readonly total: number;
  /** At the rig's sinks (the workers); the rest were Envoy's sockets, or other processes'. */
  readonly sinks: number;
}

/** /proc/net/udp's addresses are little-endian hex: `0100007F:07D1` is 127.0.0.1:2001. */
function address(hex: string): string {
  const [ip = '', port = '0'] = hex.split(':');
  const bytes = [6, 4, 2, 0].map((i) => parseInt(ip.slice(i, i + 2), 16));
  return `${bytes.join('.')}:${parseInt(port, 16)}`;
}

/** Drops per socket (by inode) of the sockets bound to one of `locals`. */
function dropsAt(locals: ReadonlySet<string>): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 13 || !locals.has(address(f[1] as string))) continue;
    out.set(f[9] as string, Number(f[12]));
  }
  return out;
}

function rcvbufErrors(): number {
  const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:'));
  const names = (lines[0] ?? '').split(/\s+/);
  const values = (lines[1] ?? '').split(/\s+/);
  return Number(values[names.indexOf('RcvbufErrors')] ?? NaN);
}

/** The machine's UDP drops between `start` and `stop`, and how many of them at the sinks (`ip:port`). */
export class UdpDropMonitor {
  private total0 = 0;
  private sinks0 = new Map<string, number>();

  constructor(private readonly sinks: ReadonlySet<string>) {}

  start(): void {
    this.total0 = rcvbufErrors();
    this.sinks0 = dropsAt(this.sinks);
  }

  stop(): UdpDrops {
    let sinks = 0;
    for (const [inode, drops] of dropsAt(this.sinks)) sinks += drops - (this.sinks0.get(inode) ?? 0);
    return { total: rcvbufErrors() - this.total0, sinks };
  }
}
