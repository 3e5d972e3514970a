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
