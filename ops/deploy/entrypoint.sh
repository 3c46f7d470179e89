#!/bin/sh
# The image's entrypoint: bring the schema up to date, once, then become the `ssot` command
# given (default `serve`), so that it gets the container's signals.
#
#   entrypoint.sh [COMMAND [ARGS…]]     e.g. serve, broadcast, project, digest, export …
#
# Before serve, broadcast, project and digest it runs `ssot migrate`, which applies pending
# migrations under an advisory lock (containers starting together apply each one once) and
# does nothing else when there are none; other commands start at once. Environment:
#
#   SSOT_DATABASE_URL        the service's own database URL (its role: least privilege)
#   MIGRATION_DATABASE_URL   the URL of the role that owns the schema: migrate as that role
#                            (unset: migrate with SSOT_DATABASE_URL, one role for both);
#                            removed from the environment before the command starts
#   SERVICE_ROLE             with MIGRATION_DATABASE_URL: the service's role, granted what
#                            it needs (`ssot migrate --grant-to`)
#   MIGRATE                  yes (default) or no: no where a migration job has run it
#                            (Kubernetes, compose), so the service never holds the owner's
#                            credentials
set -eu

command="${1:-serve}"
[ "$#" -gt 0 ] && shift

case "${MIGRATE:-yes}" in
    yes | no) ;;
    *) echo "error: usage: MIGRATE must be yes or no, not '${MIGRATE}'" >&2; exit 2 ;;
esac

case "$command" in
    serve | broadcast | project | digest)
        if [ "${MIGRATE:-yes}" = yes ]; then
            if [ -n "${MIGRATION_DATABASE_URL:-}" ]; then
                SSOT_DATABASE_URL="$MIGRATION_DATABASE_URL" \
                    ssot migrate ${SERVICE_ROLE:+--grant-to "$SERVICE_ROLE"}
            elif [ -n "${SSOT_DATABASE_URL:-}" ]; then
                ssot migrate
            fi  # neither: serve starts embedded servers and migrates them itself
        fi
        ;;
esac

unset MIGRATION_DATABASE_URL
exec ssot "$command" "$@"
