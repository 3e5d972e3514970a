/**
 * Bounds shared by the CRD schema (crds/virtualservice.yaml) and validate.ts. The apiserver
 * needs them to bound the cost of the CEL rules; the file source has no apiserver, so
 * validation enforces the same numbers and a test keeps the two in step.
 */
export const MAX_LISTENERS = 64;
export const MAX_ENDPOINTS = 256;
export const MAX_SELECTOR_LABELS = 64;
/** DNS-1123 label: listener and cluster names become Envoy resource names. */
export const MAX_NAME_LENGTH = 63;
export const MAX_ENDPOINT_NAME_LENGTH = 253;
export const MAX_ADDRESS_LENGTH = 253;
export const MAX_HASH_KEY_LENGTH = 256;
export const MAX_LABEL_VALUE_LENGTH = 63;
/** One hour: a longer interval would leave a dead worker in the hash ring for too long to be useful. */
export const MAX_HEALTH_CHECK_INTERVAL_MS = 3_600_000;
export const MIN_PORT = 1;
export const MAX_PORT = 65535;
/** A day: a call on hold may be silent for long, but a session that never ends holds an upstream socket forever. */
export const MAX_IDLE_TIMEOUT_MS = 86_400_000;
/** A log line per session per second at the most: shorter would flood the proxy's log. */
export const MIN_ACCESS_LOG_FLUSH_INTERVAL_MS = 1_000;
export const MAX_ACCESS_LOG_FLUSH_INTERVAL_MS = 86_400_000;
/** Envoy's max_connections is a uint32. */
export const MAX_SESSIONS = 4_294_967_295;
/** Maglev builds its table from the weights; a worker 1,000 times another's is the most a pipeline needs. */
export const MAX_ENDPOINT_WEIGHT = 1_000;
