# One image for every service node of the shop. The container's command chooses the service:
#   node_modules/.bin/moleculer-runner --config dist/moleculer.config.js dist/services/<name>/<name>.service.js
# (docker-compose.yml and deploy/k8s/ run one container per service this way; the default CMD
# below runs the gateway).
#
# Two stages: `build` installs every dependency, compiles TypeScript to dist/ and builds the web
# app into dist/web; the runtime stage gets only the production dependencies (not the optional
# embedded Postgres: nodes in a container connect to a Postgres server) and dist/, owned by
# root (the app cannot rewrite its own code) and run as the unprivileged `node` user (uid 1000)
# of the base image.

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json moleculer.config.ts ./
COPY app ./app
COPY platform ./platform
COPY mixins ./mixins
COPY services ./services
COPY tools ./tools
COPY bin ./bin
# The web app (storefront and dashboard), built into dist/web; the gateway serves it.
COPY web ./web
RUN npx tsc -p . && npx vite build --config web/vite.config.mts \
	&& npm prune --omit=dev --omit=optional --no-audit --no-fund

FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
# The base image's `node` user, by number so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# 3000: the gateway's HTTP port (PORT); 3030: every node's Prometheus /metrics (METRICS_PORT);
# 3031: every node's /health and /ready (HEALTH_PORT).
EXPOSE 3000 3030 3031
# moleculer-runner stops the broker on SIGTERM: in-flight requests drain (tracking, up to 10 s).
STOPSIGNAL SIGTERM
# Every node answers GET /ready on HEALTH_PORT (platform/node-health.ts): 200 once its services have
# started, its database is reachable and migrated, and its transporter is connected. With
# HEALTH_PORT=0 the node serves no health endpoint and the check passes. The gateway's compose
# service probes its own /ready (every service of the cluster) instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
	CMD ["node", "-e", "const p = process.env.HEALTH_PORT || '3031'; if (p === '0') process.exit(0); fetch('http://127.0.0.1:' + p + '/ready').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node_modules/.bin/moleculer-runner", "--config", "dist/moleculer.config.js", "dist/services/api/api.service.js"]
