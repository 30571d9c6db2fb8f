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
[Unit]
Description=certfleet coordinator (local CA, work-order signer, API)
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
Type=simple
User=certfleet
Group=certfleet
# Operators set the listen address: 0.0.0.0 serves the fleet, 127.0.0.1 only this host.
# Override with `systemctl edit certfleet-coordinator` rather than editing this file.
ExecStart=/usr/local/bin/certfleet serve --listen 0.0.0.0:8443
Environment=CERTFLEET_DATA_DIR=/var/lib/certfleet
# Optional settings and secrets, e.g. CERTFLEET_DATABASE_URL, CERTFLEET_MASTER_KEY.
EnvironmentFile=-/etc/certfleet/coordinator.env
StateDirectory=certfleet
StateDirectoryMode=0700
UMask=0077
Restart=on-failure
RestartSec=5

# Least privilege. To bind a port below 1024, set both
# CapabilityBoundingSet=CAP_NET_BIND_SERVICE and AmbientCapabilities=CAP_NET_BIND_SERVICE.
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
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
