import protobuf from 'protobufjs';

/**
 * Hand-assembled protobuf framing for responses. A DiscoveryResponse is mostly the same bytes for
 * every stream of a group; only the nonce differs. Protobuf allows fields in any order, so the
 * shared part is encoded once and the per-stream nonce field is appended.
 */

const WIRE_LEN = 2;

/** A length-delimited field: tag, length, payload. */
export function lengthDelimitedField(fieldNumber: number, payload: Uint8Array): Buffer {
  const w = protobuf.Writer.create();
  w.uint32((fieldNumber << 3) | WIRE_LEN).bytes(payload);
  return toBuffer(w.finish());
}

export function stringField(fieldNumber: number, value: string): Buffer {
  if (value === '') return EMPTY;
  const w = protobuf.Writer.create();
  w.uint32((fieldNumber << 3) | WIRE_LEN).string(value);
  return toBuffer(w.finish());
}

export const EMPTY: Buffer = Buffer.alloc(0);

export function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The shared body of a response plus its per-stream nonce (field 5) in one allocation. Nonces
 * are short ASCII, so the length fits one varint byte.
 */
export function withNonce(body: Buffer, nonce: string): Buffer {
  if (nonce.length > 127) throw new Error('nonce too long');
  const out = Buffer.allocUnsafe(body.length + 2 + nonce.length);
  body.copy(out, 0);
  out[body.length] = (5 << 3) | WIRE_LEN;
  out[body.length + 1] = nonce.length;
  out.write(nonce, body.length + 2, 'latin1');
  return out;
}
