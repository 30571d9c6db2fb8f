#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 for the test suite, as user
# `postgres` with trust authentication. On a fresh Debian machine (as root, no systemd)
# it installs, configures and starts one; a server that already answers is left alone.
#
# CERTFLEET_PG_PORT and CERTFLEET_PG_CLUSTER choose another port or Debian cluster
# name, so the script can be exercised without touching the usual server.
set -euo pipefail

HOST=127.0.0.1
PORT=${CERTFLEET_PG_PORT:-5432}
CLUSTER=${CERTFLEET_PG_CLUSTER:-main}
MARKER="# certfleet tests: trust loopback connections (scripts/ensure-postgres.sh)"

ready() { command -v pg_isready >/dev/null && pg_isready -q -h "$HOST" -p "$PORT"; }
die() { echo "ensure-postgres: $*" >&2; exit 1; }

if ready; then
  echo "PostgreSQL is answering on $HOST:$PORT"
  exit 0
fi

if ! command -v pg_ctlcluster >/dev/null; then
  echo "Installing PostgreSQL from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

# The newest version that has a cluster of this name; else create one on the newest
# installed server version. (Installing the package normally creates <version>/main.)
version=$(pg_lsclusters -h | awk -v c="$CLUSTER" '$2 == c { print $1 }' | sort -V | tail -n 1)
if [ -z "$version" ]; then
  version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
  [ -n "$version" ] || die "no PostgreSQL server version found under /usr/lib/postgresql"
  echo "Creating PostgreSQL cluster $version/$CLUSTER"
  pg_createcluster --port "$PORT" "$version" "$CLUSTER" >/dev/null
fi
conf=/etc/postgresql/$version/$CLUSTER

# pg_hba.conf takes the first matching line, so ours go at the top. The marker makes a
# second run a no-op. The database is disposable and only reachable over loopback.
hba=$conf/pg_hba.conf
if ! grep -qxF "$MARKER" "$hba"; then
  tmp=$(mktemp)
  printf '%s\n' "$MARKER" "local all postgres trust" "host all all 127.0.0.1/32 trust" "" >"$tmp"
  cat "$hba" >>"$tmp"
  cat "$tmp" >"$hba"  # rewrite in place: keeps the file's owner and mode
  rm -f "$tmp"
fi

# listen_addresses defaults to 'localhost'; only widen it, never narrow an operator's '*'.
# (pg_conftool would write 127.0.0.1 unquoted, which the server rejects, hence sed.)
listen=$(pg_conftool -s "$version" "$CLUSTER" show listen_addresses 2>/dev/null || echo localhost)
case "$listen" in
  *'*'* | *127.0.0.1* | *localhost*) ;;
  *)
    sed -i '/^[[:space:]]*listen_addresses[[:space:]]*=/d' "$conf/postgresql.conf"
    echo "listen_addresses = '${listen:+$listen,}127.0.0.1'" >>"$conf/postgresql.conf"
    ;;
esac
if [ "$(pg_conftool -s "$version" "$CLUSTER" show port)" != "$PORT" ]; then
  pg_conftool "$version" "$CLUSTER" set port "$PORT"
fi

show_log_and_die() {
  local log=/var/log/postgresql/postgresql-$version-$CLUSTER.log
  if [ -f "$log" ]; then tail -n 20 "$log" >&2; fi
  die "$* (log: $log)"
}

# No systemd here: drive the cluster directly. A cluster that runs but does not answer
# on $HOST:$PORT needs a restart, since listen_addresses and port are read at start only.
if pg_ctlcluster "$version" "$CLUSTER" status >/dev/null 2>&1; then
  action=restart
else
  action=start
fi
echo "PostgreSQL $version/$CLUSTER: $action"
pg_ctlcluster --skip-systemctl-redirect "$version" "$CLUSTER" "$action" \
  || show_log_and_die "pg_ctlcluster $version $CLUSTER $action failed"

for _ in $(seq 1 30); do
  if ready; then
    echo "PostgreSQL $version/$CLUSTER is answering on $HOST:$PORT"
    exit 0
  fi
  sleep 1
done
show_log_and_die "PostgreSQL $version/$CLUSTER did not answer on $HOST:$PORT within 30 s"
