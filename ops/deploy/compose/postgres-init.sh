#!/bin/sh
# First start of the primary (the postgres image runs /docker-entrypoint-initdb.d/ once, as
# its superuser): the ledger's database and its three roles (docs/production.md#database-roles).
#   ssot_owner    owns the database and its schema; `ssot migrate` runs as it
#   ssot_service  the ledger's processes; granted by `ssot migrate --grant-to ssot_service`
#   replicator    streaming replication for the standby (slot "standby")
# Passwords come from compose/postgres.env.
set -eu
: "${LEDGER_OWNER_PASSWORD:?}" "${LEDGER_SERVICE_PASSWORD:?}" "${REPLICATOR_PASSWORD:?}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_password="$LEDGER_OWNER_PASSWORD" \
    -v service_password="$LEDGER_SERVICE_PASSWORD" \
    -v replicator_password="$REPLICATOR_PASSWORD" <<'SQL'
CREATE ROLE ssot_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE ssot_service LOGIN PASSWORD :'service_password';
CREATE ROLE replicator LOGIN REPLICATION PASSWORD :'replicator_password';
CREATE DATABASE ssot OWNER ssot_owner;
REVOKE ALL ON DATABASE ssot FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE ssot TO ssot_service;
SELECT pg_create_physical_replication_slot('standby');
\connect ssot
ALTER SCHEMA public OWNER TO ssot_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL

echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
