# One image for every service node; the service is chosen by the container's command
# (moleculer-runner with dist/services/<name>.service.js).
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
RUN npx tsc -p . && npm prune --omit=dev

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
COPY --chown=node:node package.json ./
USER node
EXPOSE 3000 3030
# Liveness of the node's process; the gateway's compose healthcheck also probes /ready.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
	CMD node -e "process.exit(process.kill(1, 0) ? 0 : 1)"
CMD ["node_modules/.bin/moleculer-runner", "--config", "dist/moleculer.config.js", "dist/services/api.service.js"]
