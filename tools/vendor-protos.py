#!/usr/bin/env python3
"""Copy the transitive import closure of the root protos vsxds needs into protos/.

Source: the proto tree shipped in the `envoy-types` crate on crates.io (a
snapshot of Envoy's data-plane-api with xds, udpa, validate and googleapis).
Usage: tools/vendor-protos.py <extracted-crate-dir>/proto
"""
import os, re, shutil, sys

ROOTS = [
    "envoy/service/discovery/v3/ads.proto",
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/core/v3/health_check.proto",
    "envoy/extensions/filters/udp/udp_proxy/v3/udp_proxy.proto",
    "envoy/extensions/filters/udp/udp_proxy/v3/route.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/admin/v3/config_dump.proto",
    "envoy/service/status/v3/csds.proto",
]
SUBTREES = ["data-plane-api", "xds", "protoc-gen-validate", "googleapis", "cel-spec/proto", "opentelemetry-proto", "client_model"]
IMPORT = re.compile(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', re.M)


def main(src: str, dst: str) -> None:
    def find(rel: str):
        for sub in SUBTREES:
            p = os.path.join(src, sub, rel)
            if os.path.exists(p):
                return p
        return None

    seen, todo, missing = set(), list(ROOTS), set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        if rel.startswith("google/protobuf/"):
            continue  # protobufjs ships the well-known types
        path = find(rel)
        if path is None:
            missing.add(rel)
            continue
        out = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.copyfile(path, out)
        with open(path) as f:
            todo.extend(IMPORT.findall(f.read()))
    if missing:
        sys.exit("missing imports: " + ", ".join(sorted(missing)))
    print(f"vendored {len([s for s in seen if not s.startswith('google/protobuf/')])} files")


if __name__ == "__main__":
    main(sys.argv[1], os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "protos"))
