# One image for every service node of the shop. The container's command chooses the service:
#   node_modules/.bin/moleculer-runner --config dist/moleculer.config.js dist/services/<name>.service.js
# (docker-compose.yml and deploy/k8s/ run one container per service this way; the default CMD
# below runs the gateway).
#
# Two stages: `build` installs every dependency and compiles TypeScript to dist/; the runtime
# stage gets only the production dependencies and dist/, owned by root (the app cannot rewrite
# its own code) and run as the unprivileged `node` user (uid 1000) of the base image.

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json moleculer.config.ts ./
COPY lib ./lib
COPY mixins ./mixins
COPY services ./services
COPY migrations ./migrations
COPY bin ./bin
RUN npx tsc -p . && npm prune --omit=dev --no-audit --no-fund

FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
# The base image's `node` user, by number so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# 3000: the gateway's HTTP port (PORT); 3030: every node's Prometheus /metrics (METRICS_PORT).
EXPOSE 3000 3030
# moleculer-runner stops the broker on SIGTERM: in-flight requests drain (tracking, up to 10 s).
STOPSIGNAL SIGTERM
# Every node serves Prometheus metrics on METRICS_PORT (moleculer.config.ts, path /metrics); the
# node's event loop answers it, so this says the process lives and is not wedged. With
# METRICS_PORT=0 a node serves no HTTP at all and the check passes. The gateway's compose service
# probes its own /ready instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
	CMD ["node", "-e", "const p = process.env.METRICS_PORT || '3030'; if (p === '0') process.exit(0); fetch('http://127.0.0.1:' + p + '/metrics').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node_modules/.bin/moleculer-runner", "--config", "dist/moleculer.config.js", "dist/services/api.service.js"]
