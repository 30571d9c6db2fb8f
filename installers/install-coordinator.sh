#!/bin/sh
# Install the certfleet coordinator as a systemd service running as user `certfleet`
# (Linux). Running it again upgrades the coordinator and keeps its data.
#
#   sudo sh install-coordinator.sh [--package SPEC]... [--pip-index-url URL]
#
# --package SPEC is what pip installs (default certfleet-coordinator); repeat it to
# install several, e.g. local wheels or source trees, in that order.
set -eu

PACKAGES=""; INDEX_URL=""
PREFIX=/opt/certfleet
DATA=/var/lib/certfleet
ENV_FILE=/etc/certfleet/coordinator.env
NL='
'

die() { echo "install-coordinator: $*" >&2; exit 1; }
need_value() { [ $# -ge 2 ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --package) need_value "$@"; PACKAGES="$PACKAGES${PACKAGES:+$NL}$2"; shift 2 ;;
    --pip-index-url) need_value "$@"; INDEX_URL="$2"; shift 2 ;;
    *) die "unknown option: $1" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root"
command -v python3 >/dev/null 2>&1 || die "python3 not found: install Python 3.11 or newer"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python 3.11 or newer is required (found $(python3 -V 2>&1))"

echo "Installing the coordinator into $PREFIX"
if ! python3 -m venv "$PREFIX"; then
  # Debian and Ubuntu ship venv separately from python3.
  command -v apt-get >/dev/null 2>&1 || die "python3 -m venv failed"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv "$PREFIX"
fi
set --
if [ -n "$INDEX_URL" ]; then set -- --index-url "$INDEX_URL"; fi
# One package spec per line; no globbing of specs such as "pkg[extra]".
set -f; old_ifs=$IFS; IFS=$NL
for spec in ${PACKAGES:-certfleet-coordinator}; do set -- "$@" "$spec"; done
IFS=$old_ifs; set +f
"$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$@"
mkdir -p /usr/local/bin
ln -sf "$PREFIX/bin/certfleet" /usr/local/bin/certfleet

# A system account that cannot log in; it owns the data dir (CA keys, database).
if ! id certfleet >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$DATA" --no-create-home \
    --shell /usr/sbin/nologin certfleet
fi
mkdir -p "$DATA"
chown certfleet:certfleet "$DATA"
chmod 0700 "$DATA"

# systemd reads the env file as root before dropping privileges, so root-only is enough.
mkdir -p /etc/certfleet
if [ ! -f "$ENV_FILE" ]; then
  (umask 077 && cat >"$ENV_FILE" <<'ENV'
# Settings for the certfleet coordinator, read by systemd (KEY=value lines).
# CERTFLEET_DATABASE_URL=postgresql://certfleet@db.example/certfleet
ENV
  )
fi
chmod 0600 "$ENV_FILE"

if [ ! -d /run/systemd/system ]; then
  echo "No systemd found; start the coordinator as user certfleet with:"
  echo "  CERTFLEET_DATA_DIR=$DATA /usr/local/bin/certfleet serve --listen 0.0.0.0:8443"
  exit 0
fi
# Identical to systemd/certfleet-coordinator.service: this script may arrive alone.
cat >/etc/systemd/system/certfleet-coordinator.service <<'UNIT'
# certfleet coordinator: local CA, work-order signer and API, as user `certfleet`.
# Install: /etc/systemd/system/certfleet-coordinator.service. Change settings with
# `systemctl edit certfleet-coordinator` (a drop-in) rather than editing this file.
# Every directive is explained in docs/reference/service-units.md.

[Unit]
Description=certfleet coordinator (local CA, work-order signer, API)
# Listening needs the network; with PostgreSQL on the same host, start after it.
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
Type=simple
# A system account that cannot log in; it owns the data directory.
User=certfleet
Group=certfleet
# Operators set the listen address: 0.0.0.0 serves the fleet, 127.0.0.1 only this host.
ExecStart=/usr/local/bin/certfleet serve --listen 0.0.0.0:8443
Environment=CERTFLEET_DATA_DIR=/var/lib/certfleet
# Optional settings and secrets, e.g. CERTFLEET_DATABASE_URL, CERTFLEET_MASTER_KEY;
# read by systemd as root, so the file can stay 0600 root.
EnvironmentFile=-/etc/certfleet/coordinator.env
# On SIGTERM the server stops accepting connections and gives requests in flight 5 s
# (graceful_timeout); 30 s is ample before systemd resorts to SIGKILL.
TimeoutStopSec=30
# Restart after a crash, not after a clean stop.
Restart=on-failure
RestartSec=5
# /var/lib/certfleet, created 0700 and owned by User=: CA keys, TLS, SQLite, wheels.
StateDirectory=certfleet
StateDirectoryMode=0700
# Keys, database and logs are created readable by their owner only.
UMask=0077

# Least privilege: the coordinator only serves HTTPS and writes its data directory.
# No capabilities at all. To bind a port below 1024, set both
# CapabilityBoundingSet=CAP_NET_BIND_SERVICE and AmbientCapabilities=CAP_NET_BIND_SERVICE.
CapabilityBoundingSet=
AmbientCapabilities=
# No privilege gain through setuid binaries or file capabilities.
NoNewPrivileges=yes
# The whole file system read-only except StateDirectory= (and /dev, /proc, /sys).
ProtectSystem=strict
# No access to home directories.
ProtectHome=yes
# A private /tmp (pip builds the agent's wheels there for the one-liner).
PrivateTmp=yes
# No physical devices: only /dev/null, /dev/zero, /dev/urandom and the like.
PrivateDevices=yes
# Kernel tunables, modules, log, cgroups, clock and host name are off limits.
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# IP for clients and PostgreSQL, Unix sockets for a local PostgreSQL and the journal.
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
# No new namespaces, realtime scheduling, setuid/setgid files or personality changes.
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# Only the native system call ABI, and only the calls an ordinary service makes.
SystemCallArchitectures=native
SystemCallFilter=@system-service
# MemoryDenyWriteExecute stays off: cffi (used by cryptography and argon2-cffi) may
# need writable+executable memory for callbacks, and the process would be killed.

[Install]
WantedBy=multi-user.target
UNIT
chmod 0644 /etc/systemd/system/certfleet-coordinator.service
systemctl daemon-reload
systemctl enable --quiet certfleet-coordinator
systemctl restart certfleet-coordinator  # picks up an upgrade too
echo "certfleet coordinator running. Its first start prints a one-time bootstrap token:"
echo "  journalctl -u certfleet-coordinator"
