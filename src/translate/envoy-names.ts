/** Envoy names and type URLs the translation emits. */
const TYPE_PREFIX = 'type.googleapis.com/';

export const UDP_PROXY_FILTER = 'envoy.filters.udp_listener.udp_proxy';
export const UDP_PROXY_CONFIG_TYPE = `${TYPE_PREFIX}envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig`;
export const UDP_PROXY_ROUTE_TYPE = `${TYPE_PREFIX}envoy.extensions.filters.udp.udp_proxy.v3.Route`;
/** The metadata namespace Envoy's hash-based load balancers read `hash_key` from. */
export const LB_METADATA = 'envoy.lb';
export const LB_HASH_KEY = 'hash_key';
export const STDOUT_ACCESS_LOG = 'envoy.access_loggers.stdout';
export const STDERR_ACCESS_LOG = 'envoy.access_loggers.stderr';
export const STDOUT_ACCESS_LOG_TYPE = `${TYPE_PREFIX}envoy.extensions.access_loggers.stream.v3.StdoutAccessLog`;
export const STDERR_ACCESS_LOG_TYPE = `${TYPE_PREFIX}envoy.extensions.access_loggers.stream.v3.StderrAccessLog`;
