#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the registry tests; idempotent (a running one is reused).
# Installs Debian's `postgresql` package when missing. Logs go to stderr; stdout is one line to eval:
#   eval "$(bash .ci/postgres.sh)"   # sets TUNEFORGE_TEST_PG_URL=postgresql+psycopg://tuneforge@127.0.0.1:PORT/DB
# Settings: TUNEFORGE_PG_DIR (data dir, default /tmp/tuneforge-pg), TUNEFORGE_PG_PORT (default 55432).
set -euo pipefail

PGDIR="${TUNEFORGE_PG_DIR:-/tmp/tuneforge-pg}"
PORT="${TUNEFORGE_PG_PORT:-55432}"
DB=tuneforge_test
ROLE=tuneforge
log() { echo "[postgres.sh] $*" >&2; }

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

BIN="$(find_bin)"
if [[ -z "$BIN" || ! -x "$BIN/initdb" ]]; then
  log "installing postgresql from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get install -y -q postgresql >&2 || { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q postgresql >&2; }
  BIN="$(find_bin)"
fi
[[ -x "$BIN/initdb" ]] || { log "no initdb found under /usr/lib/postgresql/*/bin"; exit 1; }

# PostgreSQL refuses to run as root: the cluster belongs to the `postgres` user then (created by the package).
if [[ $(id -u) -eq 0 ]]; then
  OWNER=postgres
  as_owner() { runuser -u "$OWNER" -- "$@"; }
else
  OWNER="$(id -un)"
  as_owner() { "$@"; }
fi

mkdir -p "$PGDIR"
[[ $(id -u) -eq 0 ]] && chown "$OWNER" "$PGDIR" && chmod 700 "$PGDIR"

if [[ ! -f "$PGDIR/PG_VERSION" ]]; then
  log "initdb $PGDIR (owner $OWNER)"
  as_owner "$BIN/initdb" -D "$PGDIR" -U "$ROLE" --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null 2>&1 \
    || as_owner "$BIN/initdb" -D "$PGDIR" -U "$ROLE" --auth=trust --encoding=UTF8 --no-locale >&2
fi

if as_owner "$BIN/pg_ctl" -D "$PGDIR" status >/dev/null 2>&1; then
  log "server already running in $PGDIR"
else
  log "starting server on 127.0.0.1:$PORT"
  # The server outlives this script: it must not inherit the caller's open files (a `flock` lock on fd 3 would be
  # held for as long as the server runs).
  for fd in /proc/$$/fd/*; do
    fd="${fd##*/}"
    if [[ "$fd" -gt 2 && "$fd" -ne 255 ]]; then eval "exec $fd>&-" 2>/dev/null || true; fi  # 255: bash's script
  done
  as_owner "$BIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGDIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >&2 \
    || { tail -n 20 "$PGDIR/server.log" >&2; exit 1; }
fi
# The port of the running server (a reused server may have been started with another port).
PORT="$(sed -n '4p' "$PGDIR/postmaster.pid" | tr -d '[:space:]')"

PSQL=("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d postgres -v ON_ERROR_STOP=1 -tAq)
if [[ "$("${PSQL[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]]; then
  log "creating database $DB"
  "${PSQL[@]}" -c "CREATE DATABASE $DB" >&2
fi

URL="postgresql+psycopg://$ROLE@127.0.0.1:$PORT/$DB"
log "ready: $URL"
echo "export TUNEFORGE_TEST_PG_URL=$URL"
