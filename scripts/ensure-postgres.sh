#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 (user postgres, trust auth)
# for the test suite. Installs and starts one on a fresh Debian machine (as root);
# leaves a running server alone.
set -euo pipefail

HOST=127.0.0.1
PORT=5432

ready() { pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null; }

if command -v pg_isready >/dev/null && ready; then
  echo "PostgreSQL is answering on $HOST:$PORT"
  exit 0
fi

if ! command -v pg_ctlcluster >/dev/null; then
  echo "Installing PostgreSQL from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$version" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  pg_createcluster "$version" main
fi
conf=/etc/postgresql/$version/main

# Trust local connections: the tests' database is disposable and bound to loopback.
hba=$conf/pg_hba.conf
if ! grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
  sed -i '1i host all all 127.0.0.1/32 trust\nlocal all postgres trust' "$hba"
fi
if ! grep -q "^listen_addresses = '127.0.0.1'" "$conf/postgresql.conf"; then
  echo "listen_addresses = '127.0.0.1'" >>"$conf/postgresql.conf"
fi
if ! grep -q "^port = $PORT" "$conf/postgresql.conf"; then
  echo "port = $PORT" >>"$conf/postgresql.conf"
fi

pg_ctlcluster --skip-systemctl-redirect "$version" main start || pg_ctlcluster --skip-systemctl-redirect "$version" main reload

for _ in $(seq 1 30); do
  if ready; then
    echo "PostgreSQL $version started on $HOST:$PORT"
    exit 0
  fi
  sleep 1
done
echo "PostgreSQL did not come up on $HOST:$PORT; see /var/log/postgresql/" >&2
exit 1
