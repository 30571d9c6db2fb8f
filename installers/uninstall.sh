#!/bin/sh
# Remove the certfleet agent and/or coordinator. Data dirs stay unless --purge.
#   uninstall.sh --agent | --coordinator [--purge]
set -eu

AGENT=0; COORDINATOR=0; PURGE=0
for arg in "$@"; do
  case "$arg" in
    --agent) AGENT=1 ;;
    --coordinator) COORDINATOR=1 ;;
    --purge) PURGE=1 ;;
    *) echo "uninstall: unknown option $arg" >&2; exit 1 ;;
  esac
done
[ "$AGENT" -eq 1 ] || [ "$COORDINATOR" -eq 1 ] || { echo "uninstall: name --agent and/or --coordinator" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "uninstall: run as root" >&2; exit 1; }

remove() { # unit prefix link state
  if [ -d /run/systemd/system ] && [ -f "/etc/systemd/system/$1.service" ]; then
    systemctl disable --now "$1" || true
    rm -f "/etc/systemd/system/$1.service"
    systemctl daemon-reload
  fi
  rm -rf "$2"
  rm -f "$3"
  if [ "$PURGE" -eq 1 ]; then
    rm -rf "$4"
    echo "removed $1 and its data in $4"
  else
    echo "removed $1; its data stays in $4 (pass --purge to delete it)"
  fi
}

[ "$AGENT" -eq 1 ] && remove certfleet-agent /opt/certfleet-agent /usr/local/bin/certfleet-agent /var/lib/certfleet-agent
[ "$COORDINATOR" -eq 1 ] && remove certfleet-coordinator /opt/certfleet /usr/local/bin/certfleet /var/lib/certfleet
exit 0
