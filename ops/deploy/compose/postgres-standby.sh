#!/bin/sh
# The synchronous standby: on its first start a base backup of the primary through the
# replication slot "standby", as application_name "standby" (the name the primary's
# synchronous_standby_names waits for); then PostgreSQL in recovery, streaming.
set -eu
: "${REPLICATOR_PASSWORD:?}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready -h postgres-primary -U replicator; do sleep 1; done
    export PGPASSWORD="$REPLICATOR_PASSWORD"
    pg_basebackup -d "host=postgres-primary user=replicator application_name=standby" \
        -D "$PGDATA" -X stream -S standby -R
    chmod 700 "$PGDATA"
fi
exec postgres -c hot_standby=on -c "primary_slot_name=standby" \
    -c "primary_conninfo=host=postgres-primary user=replicator password=$REPLICATOR_PASSWORD application_name=standby"
