import { isIPv4, isIPv6 } from 'node:net';
import { MAX_ADDRESS_LENGTH, MAX_LABEL_VALUE_LENGTH, MAX_NAME_LENGTH } from './limits.js';

/** Kubernetes syntax rules for the names and labels a VirtualService carries. */

export const DNS_LABEL_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
const DNS_LABEL = new RegExp(DNS_LABEL_PATTERN);
export const LABEL_VALUE_PATTERN = '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$';
const LABEL_VALUE = new RegExp(LABEL_VALUE_PATTERN);
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const HOST_LABEL = /^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$/;

export function isDnsLabel(s: string): boolean {
  return s.length <= MAX_NAME_LENGTH && DNS_LABEL.test(s);
}

/** Object names (metadata.name): lowercase DNS labels joined by dots, at most 253 characters. */
export function isDnsSubdomain(s: string): boolean {
  return s.length > 0 && s.length <= 253 && s.split('.').every(isDnsLabel);
}

/** What is wrong with a label key, or undefined when it is valid. */
export function labelKeyProblem(key: string): string | undefined {
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && !isDnsSubdomain(prefix)) return `label key prefix "${prefix}" must be a DNS subdomain`;
  if (name.length === 0 || name.length > 63 || !LABEL_NAME.test(name)) {
    return `label key "${key}" must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (with an optional DNS prefix and '/')`;
  }
  return undefined;
}

export function labelValueProblem(value: string): string | undefined {
  if (value.length > MAX_LABEL_VALUE_LENGTH || !LABEL_VALUE.test(value)) {
    return `label value "${value}" must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`;
  }
  return undefined;
}

export type AddressKind = 'ip' | 'dns';

/**
 * An endpoint address is an IP literal (v4 or v6, no zone) or a DNS name Envoy can resolve.
 * A dotted name whose last label is numeric is a mistyped IPv4 address, not a host name.
 */
export function addressKind(address: string): AddressKind | undefined {
  if (address.length === 0 || address.length > MAX_ADDRESS_LENGTH) return undefined;
  if (isIPv4(address) || (isIPv6(address) && !address.includes('%'))) return 'ip';
  const labels = (address.endsWith('.') ? address.slice(0, -1) : address).split('.');
  if (!labels.every((l) => l.length <= 63 && HOST_LABEL.test(l))) return undefined;
  if (/^\d+$/.test(labels[labels.length - 1] ?? '')) return undefined;
  return 'dns';
}
