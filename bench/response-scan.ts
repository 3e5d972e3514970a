/** What the in-memory ADS harnesses (fanout-core, calls-core) read of the responses they are sent. */

/** The fields of a (Delta)DiscoveryResponse a client needs; both messages number them alike. */
export interface Scanned {
  version: string;
  typeUrl: string;
  nonce: string;
}

// The scanner's position; a module variable rather than a closure, so scanning costs this
// harness as little as possible next to the stream logic it measures.
let at = 0;

function varint(buf: Buffer): number {
  let v = 0;
  let shift = 0;
  for (;;) {
    const b = buf[at++] as number;
    v += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return v;
    shift += 7;
  }
}

export function scanResponse(buf: Buffer): Scanned {
  const out: Scanned = { version: '', typeUrl: '', nonce: '' };
  at = 0;
  while (at < buf.length) {
    const tag = varint(buf);
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      varint(buf);
      continue;
    }
    const len = varint(buf);
    if (field === 1 || field === 4 || field === 5) {
      const s = buf.toString('latin1', at, at + len);
      if (field === 1) out.version = s;
      else if (field === 4) out.typeUrl = s;
      else out.nonce = s;
    }
    at += len;
  }
  return out;
}
