#!/bin/sh
# One scheduled backup: an incremental `ssot export` chained onto the newest export in
# BACKUP_DIR (a full one when there is none). It is written under a temporary name
# (`ssot export` itself writes FILE.partial and renames it when complete) and renamed
# into place last, so a killed run never leaves a file that looks finished; leftovers of
# a killed run are removed first. Names sort in import order:
#   ssot-<since-position, 20 digits>-<UTC time>.ndjson.gz
#
# Environment: SSOT_DATABASE_URL (required), BACKUP_DIR (default /var/backups/ssot),
# SSOT (the ssot executable; default: ssot on PATH).
# Restore into an empty database:  ssot import $(ls "$BACKUP_DIR"/ssot-*.ndjson.gz)
set -eu

: "${SSOT_DATABASE_URL:?set SSOT_DATABASE_URL}"
BACKUP_DIR="${BACKUP_DIR:-/var/backups/ssot}"
SSOT="${SSOT:-ssot}"
mkdir -p "$BACKUP_DIR"
rm -f "$BACKUP_DIR"/next.ndjson.gz "$BACKUP_DIR"/*.partial

# shellcheck disable=SC2012  # the names are ours (digits, dashes, letters): ls sorts them safely
last="$(ls "$BACKUP_DIR"/ssot-*.ndjson.gz 2>/dev/null | sort | tail -n 1 || true)"
tmp="$BACKUP_DIR/next.ndjson.gz"
if [ -n "$last" ]; then
    "$SSOT" export --after "$last" --out "$tmp"
else
    "$SSOT" export --out "$tmp"
fi
since="$(gzip -dc "$tmp" | head -n 1 | sed -n 's/.*"since_position":\([0-9]*\).*/\1/p')"
name="ssot-$(printf '%020d' "$since")-$(date -u +%Y%m%dT%H%M%SZ).ndjson.gz"
mv "$tmp" "$BACKUP_DIR/$name"
sync "$BACKUP_DIR/$name" 2>/dev/null || true
echo "backup: $BACKUP_DIR/$name"
