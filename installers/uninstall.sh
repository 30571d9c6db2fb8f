#!/bin/sh
# Remove the certfleet agent and/or coordinator: stop and disable the service, remove
# the virtualenv, the command's symlink and the settings file. Data stays unless --purge.
#
#   sudo sh uninstall.sh --agent | --coordinator [--purge]
#
# For the agent, `install-agent.sh --uninstall [--keep-state]` does the same, reading
# where the state lives from /etc/certfleet/agent.toml.
set -eu

AGENT=0; COORDINATOR=0; PURGE=0
AGENT_HOME=/opt/certfleet-agent
AGENT_STATE=/var/lib/certfleet-agent
COORDINATOR_DATA=/var/lib/certfleet
if [ "$(uname -s)" = Darwin ]; then
  AGENT_HOME=/usr/local/certfleet-agent
  AGENT_STATE=/usr/local/var/certfleet-agent
  COORDINATOR_DATA=/usr/local/var/certfleet
fi

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

stop_service() { # systemd unit name, launchd labels (the current one, then older ones)
  unit=/etc/systemd/system/$1.service
  if [ -f "$unit" ]; then
    if [ -d /run/systemd/system ]; then systemctl disable --now --quiet "$1" || true; fi
    rm -f "$unit"
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
  fi
  shift
  for label in "$@"; do
    plist=/Library/LaunchDaemons/$label.plist
    if [ -f "$plist" ]; then
      launchctl bootout "system/$label" 2>/dev/null || true
      rm -f "$plist"
    fi
  done
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
  stop_service certfleet-agent io.certfleet.agent dev.certfleet.agent
  rm -rf "$AGENT_HOME"
  rm -f /usr/local/bin/certfleet-agent /etc/certfleet/agent.toml
  keep_or_purge agent "$AGENT_STATE"
fi

if [ "$COORDINATOR" -eq 1 ]; then
  stop_service certfleet-coordinator io.certfleet.coordinator dev.certfleet.coordinator
  rm -rf /opt/certfleet
  rm -f /usr/local/bin/certfleet
  keep_or_purge coordinator "$COORDINATOR_DATA" /etc/certfleet/coordinator.env
  # The account owns nothing once its data is gone.
  if [ "$PURGE" -eq 1 ] && id certfleet >/dev/null 2>&1; then userdel certfleet; fi
fi

# Shared by both; removed once neither has a file left in it.
rmdir /etc/certfleet 2>/dev/null || true
