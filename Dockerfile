# syntax=docker/dockerfile:1
# vsxds container image: docker build -t vsxds:latest .
# test/deploy.test.ts checks this file statically (no container engine in CI): every path copied
# exists after a build, and the runtime file set starts on production dependencies alone.

# One knob for both stages: the build stage and the runtime must run the same Node major.
ARG NODE_MAJOR=20

FROM node:${NODE_MAJOR}-bookworm-slim AS build
WORKDIR /src
# jemalloc for the runtime (see ENV LD_PRELOAD below), from Debian 12 like the runtime's glibc.
RUN apt-get update && apt-get install -y --no-install-recommends libjemalloc2 && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /opt/jemalloc && cp "/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2" /opt/jemalloc/
# Dependencies first, so editing src/ does not invalidate the npm ci layer. --ignore-scripts:
# no dependency needs an install script to work, and `prepare` would compile before src/ exists.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# distroless: no shell, no package manager, nothing for an intruder to use; only Node and glibc
# (the same Debian 12 as the build stage, should a dependency ever ship a native addon).
FROM gcr.io/distroless/nodejs${NODE_MAJOR}-debian12:nonroot
WORKDIR /app
ENV NODE_ENV=production
# Node with jemalloc instead of glibc's malloc: after a burst (bench B6's bulk fault alone, 10,000
# VirtualServices created and deleted at once) glibc kept ~60 MB of what vsxds had freed (RSS 166
# MB before, 212 MB two minutes after), jemalloc gave it back (166 before, 170 20 s after, 119 at
# two minutes).
# background_thread: freed pages go back to the kernel from a thread of jemalloc's own, also
# while vsxds is quiet. An empty LD_PRELOAD (the chart's extraEnv) turns it off.
COPY --from=build /opt/jemalloc/libjemalloc.so.2 /opt/jemalloc/libjemalloc.so.2
ENV LD_PRELOAD=/opt/jemalloc/libjemalloc.so.2
ENV MALLOC_CONF=background_thread:true
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# protos/ is read at run time (src/xds/protos.ts). crds/ travels with the image so the schema an
# image version was built against can always be recovered from the image itself.
COPY protos ./protos
COPY crds ./crds
# Numeric, so the kubelet can verify runAsNonRoot without resolving a user name.
USER 65532:65532
EXPOSE 18000 18001
# distroless has no `node` on PATH; its Node lives in /nodejs/bin.
ENTRYPOINT ["/nodejs/bin/node", "dist/main/cli.js"]
CMD ["serve"]
