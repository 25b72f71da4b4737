-- One database per service on one Postgres server (CONTRACT.md, "Environment": DATABASE_URL).
--
-- The names are what platform/db/database.ts computes: DATABASE_PREFIX (unset in deployments) followed
-- by the service name, for every entry of DATABASE_SERVICES in platform/config.ts. The postgres image
-- runs this file once, when it initialises an empty data directory, as POSTGRES_USER (`shop`),
-- which therefore owns the databases. The services would also create a missing database on start
-- (platform/db/database.ts ensureDatabase); creating them here means the nodes never need CREATEDB at run
-- time and several nodes starting together never race for it.
-- deploy/k8s/postgres.yaml carries the same statements; test/unit/deploy.test.ts checks both.
CREATE DATABASE users;
CREATE DATABASE products;
CREATE DATABASE inventory;
CREATE DATABASE orders;
CREATE DATABASE payments;
CREATE DATABASE notifications;
