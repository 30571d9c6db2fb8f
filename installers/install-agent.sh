#!/bin/sh
# Install and enroll a certfleet agent on this host (Linux with systemd, or macOS):
#
#   curl -fsSL https://coordinator:8443/install-agent.sh | sudo sh -s -- \
#       --coordinator https://coordinator:8443 --token TOKEN --ca-fingerprint SHA256
#
# Options:
#   --package SPEC       what pip installs (default certfleet-agent); repeat it to install
#                        several, e.g. local wheels or source trees, in that order
#   --pip-index-url URL  package index to install from
#   --name NAME          agent name (default: the hostname)
#   --force              enroll again although this host is already enrolled
# Running it again upgrades the agent and keeps the enrollment (no token needed).
set -eu

COORDINATOR=""; TOKEN=""; FINGERPRINT=""; NAME=""; FORCE=0
PACKAGES=""; INDEX_URL=""
PREFIX=/opt/certfleet-agent
case "$(uname -s)" in
  Darwin) STATE=/usr/local/var/certfleet-agent ;;  # matches the launchd plist below
  *) STATE=/var/lib/certfleet-agent ;;
esac
NL='
'

die() { echo "install-agent: $*" >&2; exit 1; }
need_value() { [ $# -ge 2 ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --coordinator) need_value "$@"; COORDINATOR="$2"; shift 2 ;;
    --token) need_value "$@"; TOKEN="$2"; shift 2 ;;
    --ca-fingerprint) need_value "$@"; FINGERPRINT="$2"; shift 2 ;;
    --name) need_value "$@"; NAME="$2"; shift 2 ;;
    --package) need_value "$@"; PACKAGES="$PACKAGES${PACKAGES:+$NL}$2"; shift 2 ;;
    --pip-index-url) need_value "$@"; INDEX_URL="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    *) die "unknown option: $1" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (sudo sh -s -- ...)"

# agent.json is what `certfleet-agent enroll` writes; without it this host must enroll.
ENROLL=1
if [ -f "$STATE/agent.json" ] && [ "$FORCE" -eq 0 ]; then
  ENROLL=0
elif [ -z "$COORDINATOR" ] || [ -z "$TOKEN" ] || [ -z "$FINGERPRINT" ]; then
  die "--coordinator, --token and --ca-fingerprint are required to enroll"
fi

command -v python3 >/dev/null 2>&1 || die "python3 not found: install Python 3.11 or newer"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python 3.11 or newer is required (found $(python3 -V 2>&1))"

echo "Installing the agent into $PREFIX"
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
for spec in ${PACKAGES:-certfleet-agent}; do set -- "$@" "$spec"; done
IFS=$old_ifs; set +f
"$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$@"

mkdir -p /usr/local/bin
ln -sf "$PREFIX/bin/certfleet-agent" /usr/local/bin/certfleet-agent
mkdir -p "$STATE"
chmod 0700 "$STATE"

if [ "$ENROLL" -eq 1 ]; then
  # The token goes through the environment: a command line is visible to every user.
  set -- --coordinator "$COORDINATOR" --ca-fingerprint "$FINGERPRINT"
  if [ -n "$NAME" ]; then set -- "$@" --name "$NAME"; fi
  if [ "$FORCE" -eq 1 ]; then set -- "$@" --force; fi
  CERTFLEET_ENROLLMENT_TOKEN="$TOKEN" CERTFLEET_AGENT_DIR="$STATE" \
    "$PREFIX/bin/certfleet-agent" enroll "$@"
else
  echo "Already enrolled (state in $STATE); keeping it. Pass --force to enroll again."
fi

if [ -d /run/systemd/system ]; then
  # Identical to systemd/certfleet-agent.service: this script usually arrives alone.
  cat >/etc/systemd/system/certfleet-agent.service <<'UNIT'
[Unit]
Description=certfleet agent (executes signed work orders, deploys certificates)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=/usr/local/bin/certfleet-agent run
Environment=CERTFLEET_AGENT_DIR=/var/lib/certfleet-agent
StateDirectory=certfleet-agent
StateDirectoryMode=0700
UMask=0077
Restart=always
RestartSec=5

# Runs as root by default: it writes certificate files owned by other services and
# runs their reload commands. Operators can narrow it per host, for example with
# ProtectSystem=strict plus ReadWritePaths= listing the directories it deploys to.
# ProtectSystem=full (not strict) leaves /etc writable, where most deploy targets live.
NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
LockPersonality=yes

[Install]
WantedBy=multi-user.target
UNIT
  chmod 0644 /etc/systemd/system/certfleet-agent.service
  systemctl daemon-reload
  systemctl enable --quiet certfleet-agent
  systemctl restart certfleet-agent  # picks up an upgrade too
  echo "certfleet agent running: systemctl status certfleet-agent"
elif [ "$(uname -s)" = Darwin ]; then
  plist=/Library/LaunchDaemons/dev.certfleet.agent.plist
  mkdir -p /usr/local/var/log
  # Identical to launchd/dev.certfleet.agent.plist.
  cat >"$plist" <<'PLIST'
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- certfleet agent as a launchd daemon: /Library/LaunchDaemons/dev.certfleet.agent.plist -->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>dev.certfleet.agent</string>
  <key>ProgramArguments</key>
  <array>
    <string>/usr/local/bin/certfleet-agent</string>
    <string>run</string>
  </array>
  <key>EnvironmentVariables</key>
  <dict>
    <key>CERTFLEET_AGENT_DIR</key>
    <string>/usr/local/var/certfleet-agent</string>
  </dict>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <true/>
  <!-- 63 is umask 0077: keys and state are readable by root only. -->
  <key>Umask</key>
  <integer>63</integer>
  <key>StandardOutPath</key>
  <string>/usr/local/var/log/certfleet-agent.log</string>
  <key>StandardErrorPath</key>
  <string>/usr/local/var/log/certfleet-agent.log</string>
</dict>
</plist>
PLIST
  chown root:wheel "$plist"
  chmod 0644 "$plist"
  launchctl bootout system/dev.certfleet.agent 2>/dev/null || true
  launchctl bootstrap system "$plist"
  echo "certfleet agent running: launchctl print system/dev.certfleet.agent"
else
  echo "No systemd or launchd found; start the agent with:"
  echo "  CERTFLEET_AGENT_DIR=$STATE /usr/local/bin/certfleet-agent run"
fi
