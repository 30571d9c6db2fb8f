#!/bin/sh
# Install the certfleet coordinator as a systemd service running as user `certfleet`.
# Options: --package SPEC (default certfleet-coordinator), --pip-index-url URL.
set -eu

PACKAGE="certfleet-coordinator"; INDEX_URL=""
PREFIX=/opt/certfleet

die() { echo "install-coordinator: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --package) PACKAGE="$2"; shift 2 ;;
    --pip-index-url) INDEX_URL="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is required"

python3 -m venv "$PREFIX"
if [ -n "$INDEX_URL" ]; then
  "$PREFIX/bin/pip" install --quiet --index-url "$INDEX_URL" "$PACKAGE"
else
  "$PREFIX/bin/pip" install --quiet "$PACKAGE"
fi
ln -sf "$PREFIX/bin/certfleet" /usr/local/bin/certfleet

id certfleet >/dev/null 2>&1 || useradd --system --home-dir /var/lib/certfleet --shell /usr/sbin/nologin certfleet
install -d -m 0700 -o certfleet -g certfleet /var/lib/certfleet
install -d -m 0755 /etc/certfleet
if [ ! -f /etc/certfleet/coordinator.env ]; then
  install -m 0600 /dev/null /etc/certfleet/coordinator.env
  echo "# CERTFLEET_DATABASE_URL=postgresql://certfleet@db/certfleet" >>/etc/certfleet/coordinator.env
fi

[ -d /run/systemd/system ] || die "systemd not found; run: certfleet serve --data-dir /var/lib/certfleet"
install -m 0644 "$(dirname "$0")/../systemd/certfleet-coordinator.service" /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now certfleet-coordinator
echo "certfleet coordinator running; its first start printed a bootstrap token: journalctl -u certfleet-coordinator"
