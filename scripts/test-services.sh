#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL 15 and Redis on free loopback ports, and stops both
# on every exit path (success, failure, Ctrl-C). Installs Debian's postgresql-15 and redis-server
# (and nginx) when they are missing. PostgreSQL refuses to run as root, so it runs as the `postgres` system
# user in a temporary folder that user owns. fsync is off (these databases are disposable)
# unless MYELIN_PG_DURABLE=1.
#
#   scripts/test-services.sh CMD ARGS...
#
# The command sees MYELIN_TEST_DATABASE_URL (a superuser URL to the `postgres` database),
# MYELIN_TEST_REDIS_URL, MYELIN_TEST_PG_BIN (the server binaries, for tests that restart it)
# and MYELIN_TEST_PGDATA, MYELIN_TEST_REDIS_PORT.
set -euo pipefail

log() { echo "test-services: $*" >&2; }

pg_bin=""
for dir in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
  if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then pg_bin=$dir; break; fi
done
need=()
[ -n "$pg_bin" ] || need+=(postgresql-15)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# nginx: test/integration/api/routing runs the generated proxy config in the foreground.
[ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  pg_bin=/usr/lib/postgresql/15/bin
fi

if ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })'
}

work=$(mktemp -d /tmp/myelin-test.XXXXXX)
chmod 755 "$work"
pgdata="$work/pg"
pg_port=$(free_port)
redis_port=$(free_port)

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -f "$pgdata/postmaster.pid" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -f "$work/redis.pid" ]; then
    kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# MYELIN_PG_DURABLE=1 (benchmarks) keeps PostgreSQL's defaults: fsync and synchronous_commit on.
# MYELIN_PG_STATEMENTS=1 loads pg_stat_statements (CREATE EXTENSION it in the database to profile).
if [ "${MYELIN_PG_DURABLE:-0}" = 1 ]; then
  durability="fsync = on"
else
  durability=$'fsync = off\nsynchronous_commit = off\nfull_page_writes = off'
fi
mkdir -p "$pgdata"
chown postgres:postgres "$pgdata"
runuser -u postgres -- "$pg_bin/initdb" -D "$pgdata" -U postgres --auth=trust \
  --encoding=UTF8 --locale=C >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log" >&2; exit 1; }
cat >>"$pgdata/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pgdata'
$durability
max_connections = 300
shared_buffers = 256MB
CONF
if [ "${MYELIN_PG_STATEMENTS:-0}" = 1 ]; then
  printf "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track_planning = on\n" >>"$pgdata/postgresql.conf"
fi
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w start >/dev/null
log "PostgreSQL on 127.0.0.1:$pg_port"

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize yes --pidfile "$work/redis.pid" --logfile "$work/redis.log" >/dev/null
for _ in $(seq 1 50); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
log "Redis on 127.0.0.1:$redis_port"

export MYELIN_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
export MYELIN_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
export MYELIN_TEST_PG_BIN="$pg_bin"
export MYELIN_TEST_PGDATA="$pgdata"
export MYELIN_TEST_REDIS_PORT="$redis_port"
"$@"
