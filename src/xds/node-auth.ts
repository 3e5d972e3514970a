import type { PeerCertificate } from 'node:tls';
import type { NodeReference, PodIdentity } from './node-identity.js';

/**
 * How a proxy proves which pod it is. `none` trusts what the node says; `peer-ip` requires the
 * stream to come from the pod's IP; `client-cert` requires the mTLS client certificate to name
 * the pod (URI SAN `spiffe://<trust domain>/ns/<namespace>/pod/<name>`, or CN `<namespace>/<name>`).
 */
export type NodeAuthMode = 'none' | 'peer-ip' | 'client-cert';

export const NODE_AUTH_MODES: readonly NodeAuthMode[] = ['none', 'peer-ip', 'client-cert'];

export interface StreamCredentials {
  /** grpc-js peer string: `ipv4:1.2.3.4:port`, `ipv6:[::1]:port`. */
  readonly peer: string;
  readonly certificate?: PeerCertificate;
}

/** Why a proxy may not have the identity it claims, or undefined when it may. */
export function refuseIdentity(mode: NodeAuthMode, ref: NodeReference, pod: PodIdentity | undefined, creds: StreamCredentials): string | undefined {
  if (mode === 'none') return undefined;
  if (ref.kind === 'metadata') {
    return 'node authentication is on: identify with node.id <namespace>/<pod-name> (or the pod UID), not node.metadata';
  }
  if (!pod) return 'the pod this node names is not known';
  const who = `pod ${pod.namespace}/${pod.name}`;
  if (mode === 'peer-ip') {
    const ip = peerIp(creds.peer);
    if (!pod.ip) return `${who} has no IP yet, so the stream from ${ip} cannot be checked`;
    return ip === pod.ip ? undefined : `the stream comes from ${ip}, not from ${who} (${pod.ip})`;
  }
  const names = certificatePodNames(creds.certificate);
  if (names.length === 0) return 'node authentication needs a client certificate that names the pod (mTLS)';
  return names.includes(`${pod.namespace}/${pod.name}`) ? undefined : `the client certificate names ${names.join(', ')}, not ${who}`;
}

export function peerIp(peer: string): string {
  const rest = peer.replace(/^ipv[46]:/, '');
  if (rest.startsWith('[')) return rest.slice(1, rest.indexOf(']'));
  const colon = rest.lastIndexOf(':');
  const ip = colon > 0 ? rest.slice(0, colon) : rest;
  return ip.replace(/^::ffff:/, '');
}

/** `namespace/name` of every pod a certificate names. */
export function certificatePodNames(cert: PeerCertificate | undefined): string[] {
  if (!cert || Object.keys(cert).length === 0) return [];
  const names: string[] = [];
  for (const entry of (cert.subjectaltname ?? '').split(',').map((s) => s.trim())) {
    const m = /^URI:spiffe:\/\/[^/]+\/ns\/([^/]+)\/pod\/([^/]+)$/.exec(entry);
    if (m) names.push(`${m[1]}/${m[2]}`);
  }
  const cn = cert.subject?.CN;
  const cns = Array.isArray(cn) ? cn : cn ? [cn] : [];
  for (const c of cns) if (/^[a-z0-9-]+\/[a-z0-9.-]+$/.test(c)) names.push(c);
  return names;
}
