# hsmproxy: multi-stage build. The build stage compiles TypeScript with dev dependencies; the
# runtime stage carries only production dependencies and dist/, runs as a non-root user, and
# keeps data (HSM stores of the embedded cluster) and certs (certificates, key references) in
# volumes. No secret is baked in: credentials come from HSMPROXY_PIN or a mounted 0600 file.

FROM node:20-bookworm-slim AS build
WORKDIR /src
# pkcs11js is a native addon: node-gyp needs python3, make and g++ at install time.
# Unpinned on purpose (build-only toolchain; the distribution's current versions).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# The package's own `prepare` (the build) would run before its sources are here: skip scripts,
# then run the one dependency script the image needs (pkcs11js's native build). The build follows.
RUN npm ci --no-audit --no-fund --ignore-scripts \
 && npm rebuild pkcs11js
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
# A fixed uid/gid, so volumes keep working across rebuilds. No extra packages: the HEALTHCHECK
# uses node itself; softhsm2 is not included (mount your PKCS#11 module instead). /app/hsm-client
# is where compose mounts a proxy's client bundle: a new volume takes this directory's owner and
# mode, so the non-root setup step can write it.
RUN groupadd --system --gid 10001 hsmproxy \
 && useradd --system --uid 10001 --gid hsmproxy --home-dir /app --shell /usr/sbin/nologin hsmproxy \
 && mkdir -p /app/data /app/certs && chown hsmproxy:hsmproxy /app/data /app/certs \
 && install -d -m 0700 -o hsmproxy -g hsmproxy /app/hsm-client
# Code and example configs stay owned by root: the process may write only its volumes.
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY config ./config
USER hsmproxy
VOLUME ["/app/data", "/app/certs"]
EXPOSE 8443 9464
# The admin port of the shipped configs (admin.port 9464); change it here if yours differs.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9464/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/src/cli/entry.cjs"]
# No argument: the embedded default (cluster in /app/data, demo certificates in /app/certs). It
# listens on 127.0.0.1 like `npm start`; to publish ports, mount a config whose listeners and
# admin use address 0.0.0.0 and run `serve --config /app/config/yours.yaml`.
CMD ["serve"]
