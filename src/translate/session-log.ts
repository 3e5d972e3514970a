import type { AccessLogSpec } from '../model/types.js';
import { durationMs } from './duration.js';
import { STDERR_ACCESS_LOG, STDERR_ACCESS_LOG_TYPE, STDOUT_ACCESS_LOG, STDOUT_ACCESS_LOG_TYPE } from './envoy-names.js';

/** The udp_proxy's per-session numbers (Envoy sets them as dynamic metadata when it logs a session). */
const SESSION = 'udp.proxy.session';

/**
 * One JSON line per session. vsxds fixes the format: a format string from a VirtualService could
 * read what the proxy process may (%ENVIRONMENT(...)% prints its environment variables). "From" and
 * "to" are the client's side: BYTES_RECEIVED and datagrams_received are what the client sent.
 */
function sessionLogFormat(listener: string): object {
  const format: Record<string, string> = {
    listener,
    type: '%ACCESS_LOG_TYPE%',
    start_time: '%START_TIME%',
    log_time: '%EMIT_TIME%',
    duration_ms: '%DURATION%',
    client: '%DOWNSTREAM_REMOTE_ADDRESS%',
    listener_address: '%DOWNSTREAM_LOCAL_ADDRESS%',
    upstream_cluster: `%DYNAMIC_METADATA(${SESSION}:cluster_name)%`,
    upstream_host: '%UPSTREAM_HOST%',
    bytes_from_client: '%BYTES_RECEIVED%',
    bytes_to_client: '%BYTES_SENT%',
    datagrams_from_client: `%DYNAMIC_METADATA(${SESSION}:datagrams_received)%`,
    datagrams_to_client: `%DYNAMIC_METADATA(${SESSION}:datagrams_sent)%`,
    errors_to_client: `%DYNAMIC_METADATA(${SESSION}:errors_sent)%`,
  };
  // A google.protobuf.Struct, as the encoder takes it.
  return { fields: Object.fromEntries(Object.entries(format).map(([key, value]) => [key, { stringValue: value }])) };
}

/**
 * A listener's udp_proxy access_log (and its flush options): Envoy's stdout or stderr logger, which
 * take no path, so no VirtualService can make the proxy write a file.
 */
export function sessionAccessLog(listener: string, spec: AccessLogSpec): object {
  const [name, type] = spec.destination === 'stderr' ? [STDERR_ACCESS_LOG, STDERR_ACCESS_LOG_TYPE] : [STDOUT_ACCESS_LOG, STDOUT_ACCESS_LOG_TYPE];
  return {
    access_log: [{ name, typed_config: { '@type': type, log_format: { json_format: sessionLogFormat(listener) } } }],
    ...(spec.flush_interval_ms !== undefined ? { access_log_options: { access_log_flush_interval: durationMs(spec.flush_interval_ms) } } : {}),
  };
}
