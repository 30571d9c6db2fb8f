#!/bin/sh
# Remove the certfleet agent and/or coordinator: stop and disable the service, remove
# the virtualenv and the command's symlink. Data stays unless --purge.
#
#   sudo sh uninstall.sh --agent | --coordinator [--purge]
set -eu

AGENT=0; COORDINATOR=0; PURGE=0
AGENT_STATE=/var/lib/certfleet-agent
if [ "$(uname -s)" = Darwin ]; then AGENT_STATE=/usr/local/var/certfleet-agent; fi

die() { echo "uninstall: $*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --agent) AGENT=1 ;;
    --coordinator) COORDINATOR=1 ;;
    --purge) PURGE=1 ;;
    *) die "unknown option: $arg (use --agent, --coordinator, --purge)" ;;
  esac
done
[ "$AGENT" -eq 1 ] || [ "$COORDINATOR" -eq 1 ] || die "name --agent and/or --coordinator"
[ "$(id -u)" -eq 0 ] || die "run as root"

stop_service() { # systemd unit name, launchd label
  unit=/etc/systemd/system/$1.service
  if [ -f "$unit" ]; then
    if [ -d /run/systemd/system ]; then systemctl disable --now --quiet "$1" || true; fi
    rm -f "$unit"
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
  fi
  plist=/Library/LaunchDaemons/$2.plist
  if [ -f "$plist" ]; then
    launchctl bootout "system/$2" 2>/dev/null || true
    rm -f "$plist"
  fi
}

keep_or_purge() { # what, paths...
  what=$1; shift
  if [ "$PURGE" -eq 1 ]; then
    rm -rf "$@"
    echo "Removed the $what and its data ($*)."
  else
    echo "Removed the $what. Its data stays in $* (run again with --purge to delete it)."
  fi
}

if [ "$AGENT" -eq 1 ]; then
  stop_service certfleet-agent dev.certfleet.agent
  rm -rf /opt/certfleet-agent
  rm -f /usr/local/bin/certfleet-agent
  keep_or_purge agent "$AGENT_STATE"
fi

if [ "$COORDINATOR" -eq 1 ]; then
  stop_service certfleet-coordinator dev.certfleet.coordinator
  rm -rf /opt/certfleet
  rm -f /usr/local/bin/certfleet
  keep_or_purge coordinator /var/lib/certfleet /etc/certfleet
  # The account owns nothing once its data is gone.
  if [ "$PURGE" -eq 1 ] && id certfleet >/dev/null 2>&1; then userdel certfleet; fi
fi
