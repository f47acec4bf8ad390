# hsmproxy: multi-stage build. The build stage compiles TypeScript with dev dependencies; the
# runtime stage carries only production dependencies and dist/, runs as a non-root user, and
# keeps data (HSM stores of the embedded cluster) and certs (certificates, key references) in
# volumes. No secret is baked in: credentials come from HSMPROXY_PIN or a mounted 0600 file.

FROM node:20-bookworm-slim AS build
WORKDIR /src
# pkcs11js is a native addon: node-gyp needs python3, make and g++ at install time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
# curl for the HEALTHCHECK; softhsm2 is not included (mount your PKCS#11 module instead).
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system hsmproxy && useradd --system --gid hsmproxy --home-dir /app hsmproxy \
 && mkdir -p /app/data /app/certs && chown -R hsmproxy:hsmproxy /app
COPY --from=build --chown=hsmproxy:hsmproxy /src/package.json ./
COPY --from=build --chown=hsmproxy:hsmproxy /src/node_modules ./node_modules
COPY --from=build --chown=hsmproxy:hsmproxy /src/dist ./dist
COPY --chown=hsmproxy:hsmproxy config ./config
USER hsmproxy
VOLUME ["/app/data", "/app/certs"]
EXPOSE 8443 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
ENTRYPOINT ["node", "dist/src/cli/main.js"]
# No argument: the embedded default (cluster in /app/data, demo certificates in /app/certs). It
# listens on 127.0.0.1 like `npm start`; to publish ports, mount a config whose listeners and
# admin use address 0.0.0.0 and run `serve --config /app/config/yours.yaml`.
CMD ["serve"]
