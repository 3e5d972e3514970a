/** google.protobuf.Duration for a whole number of milliseconds; zero parts are left out as proto3 would. */
export function durationMs(ms: number): { seconds?: number; nanos?: number } {
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms % 1000) * 1_000_000;
  return { ...(seconds ? { seconds } : {}), ...(nanos ? { nanos } : {}) };
}
