#!/bin/sh
# Install, upgrade or remove the certfleet agent on this host (Linux or macOS).
#
# A coordinator serves this script at /install/agent.sh with its own address and the
# SHA-256 fingerprint of its root CA filled in:
#
#   curl -fsSL --cacert ca.pem https://COORD:8443/install/agent.sh \
#     | sudo sh -s -- --token ENROLL_TOKEN [--name NAME]
#
# It checks for Python 3.11 or newer; fetches the coordinator's CA and accepts it only
# if its fingerprint is the one embedded below; downloads the agent's wheels from the
# coordinator over TLS pinned to that CA; installs them into a new virtualenv
# (dependencies come from the package index pip is set up with); enrolls, on the first
# install only; writes /etc/certfleet/agent.toml (0600); and installs and starts the
# service, saying what it did at each step. Running it again upgrades in place and
# keeps the enrollment. Until the new version is switched in, a failure removes
# everything the run created, so the host stays as it was. Options: see usage() below,
# or run it with --help. How-to: docs/how-to/install-agents.md.
set -eu

# Filled in by the coordinator that serves this script.
EMBEDDED_COORDINATOR='@CERTFLEET_COORDINATOR_URL@'
EMBEDDED_FINGERPRINT='@CERTFLEET_CA_FINGERPRINT@'

say() { printf 'install-agent: %s\n' "$*"; }
die() { printf 'install-agent: %s\n' "$*" >&2; exit 1; }
need_value() { [ $# -ge 2 ] || die "$1 needs a value"; }

usage() {
  cat <<'USAGE'
Usage: curl -fsSL --cacert ca.pem https://COORD:8443/install/agent.sh | sudo sh -s -- [OPTIONS]

Install or upgrade:
  --token TOKEN            enrollment token (cfe_...), for the first install only;
                           CERTFLEET_ENROLLMENT_TOKEN works too
  --name NAME              agent name (default: the hostname)
  --no-service             do not install or start the service
  --force-enroll           enroll again although this host is enrolled (new identity)
  --pip-index-url URL      package index for the agent's dependencies
  --python PATH            the Python to build the virtualenv with (3.11 or newer)
  --coordinator URL        coordinator address (default: the one that served this)
  --ca-fingerprint SHA256  its root CA's fingerprint (default: the one it embedded)
  --label KEY=VALUE        a label for this agent (repeatable; the enrollment token's
                           labels win where both name the same key)
Remove:
  --uninstall              stop and remove the service, the virtualenv, agent.toml
                           and the state directory
  --keep-state             with --uninstall: keep the state directory (identity, keys)
Both:
  --prefix DIR             work under DIR as if it were / (tests and trials): the
                           virtualenv, agent.toml, state, command link and service
                           file all go below DIR, and the service manager is not told
  -h, --help

Layout (Linux; macOS in brackets):
  /opt/certfleet-agent/releases/VERSION-STAMP  one virtualenv per install
  /opt/certfleet-agent/current                 the release in use (symlink)
    [/usr/local/certfleet-agent/...]
  /usr/local/bin/certfleet-agent               symlink to current/bin/certfleet-agent
  /etc/certfleet/agent.toml                    the operator's settings (0600)
  /var/lib/certfleet-agent                     state: identity, keys, SQLite (0700)
    [/usr/local/var/certfleet-agent]
  /etc/systemd/system/certfleet-agent.service  [/Library/LaunchDaemons/io.certfleet.agent.plist]
USAGE
}

# --- state of this run, for the rollback --------------------------------------------

WORK=""            # temporary directory: the CA, the index, the wheels
NEW_RELEASE=""     # the virtualenv this run is building
STAGED_CONFIG=""   # agent.toml being prepared
CURRENT_LINK_TMP=""
CREATED_DIRS=""    # directories that did not exist before this run
SWITCHED=0         # once 1, the new release is in use and nothing is rolled back

on_exit() {
  status=$?
  set +e
  if [ "$status" -ne 0 ] && [ "$SWITCHED" -eq 0 ]; then
    [ -n "$NEW_RELEASE" ] && rm -rf "$NEW_RELEASE"
    [ -n "$STAGED_CONFIG" ] && rm -f "$STAGED_CONFIG"
    [ -n "$CURRENT_LINK_TMP" ] && rm -f "$CURRENT_LINK_TMP"
    for dir in $CREATED_DIRS; do rm -rf "$dir"; done
    printf 'install-agent: failed; removed what this run had created, the host is as it was\n' >&2
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$status"
}

# Record the outermost directory this creates, so a rollback removes exactly that.
ensure_dir() { # DIR [MODE]
  if [ ! -d "$1" ]; then
    top=$1
    while [ ! -d "$(dirname "$top")" ]; do top=$(dirname "$top"); done
    mkdir -p "$1"
    CREATED_DIRS="$CREATED_DIRS $top"
  fi
  if [ $# -ge 2 ]; then chmod "$2" "$1"; fi
}

# --- the host -----------------------------------------------------------------------

detect_host() {
  OS=$(uname -s)
  ARCH=$(uname -m)
  case "$OS" in
    Linux|Darwin) ;;
    *) die "unsupported system $OS: the agent installs on Linux and macOS" ;;
  esac
  case "$ARCH" in
    x86_64|amd64|aarch64|arm64) ;;
    *) say "note: $ARCH is not a tested architecture; pip must find or build wheels for it" ;;
  esac
}

layout() {
  case "$OS" in
    Darwin) VENV_HOME=$ROOT/usr/local/certfleet-agent; DEFAULT_STATE=$ROOT/usr/local/var/certfleet-agent ;;
    *) VENV_HOME=$ROOT/opt/certfleet-agent; DEFAULT_STATE=$ROOT/var/lib/certfleet-agent ;;
  esac
  CONFIG_DIR=$ROOT/etc/certfleet
  CONFIG=$CONFIG_DIR/agent.toml
  COMMAND_LINK=$ROOT/usr/local/bin/certfleet-agent
  UNIT=$ROOT/etc/systemd/system/certfleet-agent.service
  PLIST=$ROOT/Library/LaunchDaemons/io.certfleet.agent.plist
  # The label before the rename; an upgrade removes it.
  LEGACY_PLIST=$ROOT/Library/LaunchDaemons/dev.certfleet.agent.plist
}

# The service manager is told only about a real install, never about a --prefix one.
manages_services() { [ -z "$ROOT" ]; }

python_hint() {
  if [ "$OS" = Darwin ]; then
    echo "install it with 'brew install python@3.12' or from python.org"
  elif command -v apt-get >/dev/null 2>&1; then
    echo "install it with 'apt-get install python3 python3-venv' (Debian 12 and Ubuntu 23.04 or newer ship 3.11+; older releases: python3.11 and python3.11-venv)"
  elif command -v dnf >/dev/null 2>&1; then
    echo "install it with 'dnf install python3.11'"
  elif command -v yum >/dev/null 2>&1; then
    echo "install it with 'yum install python3.11'"
  elif command -v zypper >/dev/null 2>&1; then
    echo "install it with 'zypper install python311'"
  elif command -v apk >/dev/null 2>&1; then
    echo "install it with 'apk add python3'"
  else
    echo "install Python 3.11 or newer from your distribution's packages"
  fi
}

find_python() {
  candidates=${PYTHON_CHOICE:-"python3 python3.13 python3.12 python3.11"}
  older=""
  for candidate in $candidates; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' </dev/null 2>/dev/null; then
      PY=$(command -v "$candidate")
      break
    fi
    older="$candidate is $("$candidate" -V 2>&1 </dev/null)"
  done
  [ -n "${PY:-}" ] || die "Python 3.11 or newer is required${older:+ ($older)}: $(python_hint)"
  if ! "$PY" -c 'import ensurepip, venv' </dev/null 2>/dev/null; then
    package=$("$PY" -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])' </dev/null)
    die "$PY cannot create virtualenvs: install the $package package (apt-get install $package)"
  fi
  say "Host: $OS $ARCH, $("$PY" -V 2>&1 </dev/null) at $PY"
}

# --- coordinator and trust ------------------------------------------------------------

check_coordinator() {
  case "$COORDINATOR" in
    @*@|"") die "no coordinator address: fetch this script from a coordinator's /install/agent.sh, or pass --coordinator" ;;
  esac
  case "$CA_FINGERPRINT" in
    @*@|"") die "no CA fingerprint: fetch this script from a coordinator's /install/agent.sh, or pass --ca-fingerprint" ;;
  esac
  COORDINATOR=${COORDINATOR%/}
  case "$COORDINATOR" in
    https://?*) ;;
    *) die "the coordinator address must start with https:// (over plain http the enrollment token would cross the network in clear)" ;;
  esac
  # Only what a URL of host, port and path needs: the value goes into agent.toml.
  case "$COORDINATOR" in
    *[!]A-Za-z0-9._~:/[-]*) die "the coordinator address has characters other than letters, digits and . _ ~ : / [ ] -" ;;
  esac
  CA_FINGERPRINT=$(printf '%s' "$CA_FINGERPRINT" | tr 'A-F' 'a-f' | tr -d ':')
  CA_FINGERPRINT=${CA_FINGERPRINT#sha256}
  case "$CA_FINGERPRINT" in
    *[!0-9a-f]*) die "the CA fingerprint must be a SHA-256 in hex (64 digits, colons allowed)" ;;
  esac
  [ "${#CA_FINGERPRINT}" -eq 64 ] || die "the CA fingerprint must be a SHA-256 in hex (64 digits, colons allowed)"
}

# Fetch URL into FILE; on an HTTP error show the start of the answer (a problem detail).
fetch() { # URL FILE CURL-OPTIONS...
  url=$1; out=$2; shift 2
  code=$(curl -sS --proto '=https' --tlsv1.3 --connect-timeout 30 --max-time 900 -o "$out" \
    -w '%{http_code}' "$@" "$url" </dev/null) || die "cannot fetch $url"
  [ "$code" = 200 ] || die "$url answered HTTP $code: $(head -c 400 "$out" 2>/dev/null || true)"
}

pin_ca() {
  say "Fetching the coordinator's CA from $COORDINATOR"
  # Unverified on purpose: the certificate is accepted only if its SHA-256 is the
  # fingerprint this script carries, and from then on every request trusts it alone.
  fetch "$COORDINATOR/.well-known/certfleet/ca.pem" "$WORK/offered-ca.pem" --insecure
  if ! "$PY" - "$WORK/offered-ca.pem" "$CA_FINGERPRINT" "$WORK/ca.pem" <<'PY' 2>/dev/null
import hashlib, hmac, re, ssl, sys
offered = open(sys.argv[1], encoding="ascii", errors="replace").read()
for block in re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", offered, re.S):
    if hmac.compare_digest(hashlib.sha256(ssl.PEM_cert_to_DER_cert(block)).hexdigest(), sys.argv[2]):
        with open(sys.argv[3], "w") as pinned:
            pinned.write(block + "\n")
        sys.exit(0)
sys.exit(1)
PY
  then
    die "the coordinator's CA does not match the fingerprint $CA_FINGERPRINT; refusing to install"
  fi
  say "The coordinator's CA matches the pinned fingerprint"
}

download_wheels() {
  say "Downloading the agent's wheels from $COORDINATOR/install/wheels/"
  fetch "$COORDINATOR/install/wheels/" "$WORK/index.html" --cacert "$WORK/ca.pem"
  "$PY" - "$WORK/index.html" >"$WORK/wheels.txt" <<'PY' || die "the coordinator's wheel index lists no certfleet_shared and certfleet_agent wheels"
import re, sys
page = open(sys.argv[1], encoding="utf-8", errors="replace").read()
link = r'href="((certfleet_shared|certfleet_agent)-[0-9A-Za-z.+!_]+-py3-none-any\.whl)#sha256=([0-9a-f]{64})"'
found = {kind: (name, digest) for name, kind, digest in re.findall(link, page)}
if set(found) != {"certfleet_shared", "certfleet_agent"}:
    sys.exit(1)
for name, digest in found.values():
    print(name, digest)
PY
  mkdir "$WORK/wheels"
  while read -r name digest; do
    fetch "$COORDINATOR/install/wheels/$name" "$WORK/wheels/$name" --cacert "$WORK/ca.pem"
    "$PY" -c 'import hashlib, sys; sys.exit(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest() != sys.argv[2])' \
      "$WORK/wheels/$name" "$digest" </dev/null || die "$name does not match the SHA-256 in the index"
    say "  $name (sha256 $digest)"
    case "$name" in certfleet_agent-*) VERSION=${name#certfleet_agent-}; VERSION=${VERSION%%-*} ;; esac
  done <"$WORK/wheels.txt"
}

# --- settings and state ---------------------------------------------------------------

# state_dir from an existing agent.toml (empty when it does not say).
configured_state_dir() { # PYTHON
  "$1" - "$CONFIG" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as handle:
    print(tomllib.load(handle).get("state_dir", ""))
PY
}

write_config() { # FILE
  (umask 077 && cat >"$1" <<TOML
# certfleet agent settings. Reference: docs/reference/agent-config.md.
# After editing: certfleet-agent --config $CONFIG config check
# (then restart the service). Environment variables override these values.
coordinator_url = "$COORDINATOR"
ca_fingerprint = "$CA_FINGERPRINT"
state_dir = "$STATE"
log_level = "info"

# Secrets that targets name (JSON object, 0600); default: state_dir/secrets.json.
# secrets_file = "$STATE/secrets.json"
# Directories the agent's discovery scans for certificates.
# discovery_roots = ["/etc/ssl", "/etc/nginx"]
TOML
  )
  chmod 0600 "$1"
}

# --- service files ------------------------------------------------------------------
# Identical to systemd/certfleet-agent.service and launchd/io.certfleet.agent.plist
# (a test keeps them so): a piped script has no repository beside it.

unit_file() {
  cat <<'UNIT'
# certfleet agent: polls the coordinator for signed work orders and deploys certificates.
# Install: /etc/systemd/system/certfleet-agent.service. Change settings with
# `systemctl edit certfleet-agent` (a drop-in) rather than editing this file.
# Every directive is explained in docs/reference/service-units.md.

[Unit]
Description=certfleet agent (executes signed work orders, deploys certificates)
# Polling needs the network; wait for it instead of failing the first polls.
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
# The settings file names the state directory, the coordinator and the CA pin.
ExecStart=/usr/local/bin/certfleet-agent --config /etc/certfleet/agent.toml run
# `systemctl reload` sends SIGHUP, which the agent handles instead of exiting.
ExecReload=/bin/kill -HUP $MAINPID
# On SIGTERM the agent stops polling and gives the deployment in progress up to 60 s
# (CERTFLEET_AGENT_STOP_DEADLINE) to finish, then rolls it back and sends its last
# results: 90 s leaves room for all of that before systemd resorts to SIGKILL.
TimeoutStopSec=90
# SIGTERM goes to the agent alone, so a reload command it is running is not cut off
# half-way; whatever is left after TimeoutStopSec is killed.
KillMode=mixed
# Restart after a crash, not after a clean exit: exit 0 means the agent was retired
# (or stopped), and exit 2 means its settings are invalid, which a restart cannot fix.
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=2
# /var/lib/certfleet-agent, created 0700 and owned by the service user.
StateDirectory=certfleet-agent
StateDirectoryMode=0700
# Keys and state files are created readable by their owner only.
UMask=0077

# Sandboxing. The agent runs as root: it writes certificate files owned by other
# services and runs their config tests and reloads. What it may not do:
# No privilege gain through setuid binaries or file capabilities.
NoNewPrivileges=yes
# /usr and /boot read-only. Not "full" or "strict": those make /etc read-only too,
# and most deploy targets (nginx, Apache, Postfix...) live under /etc. Narrow it per
# host with ProtectSystem=strict plus ReadWritePaths= listing the target directories.
ProtectSystem=yes
# Home directories are visible (a target may live there) but not writable.
ProtectHome=read-only
# A private /tmp: nothing the agent stages there is visible to other services.
PrivateTmp=yes
# No loading kernel modules, reading the kernel log or changing cgroups.
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
# IP for the coordinator and TLS checks, Unix sockets for HAProxy's master CLI and
# the journal; nothing else (no netlink, no raw packets).
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
# No switching the execution domain (personality).
LockPersonality=yes

[Install]
WantedBy=multi-user.target
UNIT
}

plist_file() {
  cat <<'PLIST'
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- certfleet agent as a launchd daemon: /Library/LaunchDaemons/io.certfleet.agent.plist.
     Every key is explained in docs/reference/service-units.md. -->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>io.certfleet.agent</string>
  <!-- The settings file names the state directory, the coordinator and the CA pin. -->
  <key>ProgramArguments</key>
  <array>
    <string>/usr/local/bin/certfleet-agent</string>
    <string>--config</string>
    <string>/etc/certfleet/agent.toml</string>
    <string>run</string>
  </array>
  <key>RunAtLoad</key>
  <true/>
  <!-- Restart after a crash, not after a clean exit (exit 0: the agent was retired). -->
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <!-- Wait 10 s between restarts rather than spinning on a persistent failure. -->
  <key>ThrottleInterval</key>
  <integer>10</integer>
  <!-- On SIGTERM the agent gives the deployment in progress up to 60 s to finish, then
       rolls it back and sends its last results: 90 s before launchd sends SIGKILL. -->
  <key>ExitTimeOut</key>
  <integer>90</integer>
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
}

# The service files name the real paths; under --prefix they name the prefixed ones.
relocate() {
  sed -e "s|/usr/local/bin/certfleet-agent|$COMMAND_LINK|" -e "s|/etc/certfleet/agent.toml|$CONFIG|"
}

write_file_atomically() { # FILE MODE (content on stdin)
  cat >"$1.new.$$"
  chmod "$2" "$1.new.$$"
  mv -f "$1.new.$$" "$1"
}

install_service() {
  if [ "$NO_SERVICE" -eq 1 ]; then
    say "Skipped the service (--no-service); run the agent with: $COMMAND_LINK --config $CONFIG run"
    return 0
  fi
  if [ "$OS" = Darwin ]; then
    mkdir -p "$(dirname "$PLIST")"
    plist_file | relocate | write_file_atomically "$PLIST" 0644
    say "Wrote $PLIST"
    manages_services || { say "Not loading it (--prefix)"; return 0; }
    chown root:wheel "$PLIST"
    mkdir -p /usr/local/var/log
    if [ -f "$LEGACY_PLIST" ]; then
      launchctl bootout system/dev.certfleet.agent 2>/dev/null || true
      rm -f "$LEGACY_PLIST"
      say "Removed the old dev.certfleet.agent job"
    fi
    launchctl bootout system/io.certfleet.agent 2>/dev/null || true
    launchctl bootstrap system "$PLIST"
    say "Started the agent: launchctl print system/io.certfleet.agent"
    return 0
  fi
  mkdir -p "$(dirname "$UNIT")"
  unit_file | relocate | write_file_atomically "$UNIT" 0644
  say "Wrote $UNIT"
  if ! manages_services; then
    say "Not enabling it (--prefix); run the agent with: $COMMAND_LINK --config $CONFIG run"
  elif [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --quiet certfleet-agent
    systemctl restart certfleet-agent
    say "Started the agent (restarted if it was running): systemctl status certfleet-agent"
  else
    say "systemd is not running; start the agent with: $COMMAND_LINK --config $CONFIG run"
  fi
}

# --- install ------------------------------------------------------------------------

install_agent() {
  [ -n "$ROOT" ] || [ "$(id -u)" -eq 0 ] || die "run as root (curl ... | sudo sh -s -- ...), or pass --prefix DIR"
  command -v curl >/dev/null 2>&1 || die "curl is required"
  check_coordinator
  find_python

  STATE=$DEFAULT_STATE
  if [ -f "$CONFIG" ]; then
    configured=$(configured_state_dir "$PY") || die "$CONFIG is not valid TOML: fix it or move it away, then run this again"
    [ -z "$configured" ] || STATE=$configured
  fi
  ENROLLED=0
  if [ -f "$STATE/agent.json" ]; then ENROLLED=1; fi
  if [ "$ENROLLED" -eq 1 ] && [ "$FORCE_ENROLL" -eq 0 ]; then
    say "Already enrolled (state in $STATE): upgrading, keeping the identity"
  elif [ -z "$TOKEN" ]; then
    die "--token is required to enroll this host (mint one with 'certfleet agents enroll-token')"
  fi

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/certfleet-agent-install.XXXXXX")
  pin_ca
  download_wheels

  # A new virtualenv per install: the one in use stays intact until the switch below.
  ensure_dir "$VENV_HOME/releases" 0755
  ensure_dir "$(dirname "$COMMAND_LINK")"
  ensure_dir "$CONFIG_DIR" 0755
  NEW_RELEASE=$VENV_HOME/releases/$VERSION-$(date -u +%Y%m%dT%H%M%SZ)-$$
  say "Creating a virtualenv in $NEW_RELEASE"
  "$PY" -m venv "$NEW_RELEASE" </dev/null
  say "Installing certfleet-agent $VERSION and its dependencies"
  set --
  if [ -n "$INDEX_URL" ]; then set -- --index-url "$INDEX_URL"; fi
  "$NEW_RELEASE/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@" \
    "$WORK"/wheels/certfleet_shared-*.whl "$WORK"/wheels/certfleet_agent-*.whl </dev/null
  agent=$NEW_RELEASE/bin/certfleet-agent

  settings=$CONFIG
  if [ -f "$CONFIG" ]; then
    say "Keeping $CONFIG"
  else
    STAGED_CONFIG=$CONFIG_DIR/.agent.toml.new.$$
    write_config "$STAGED_CONFIG"
    settings=$STAGED_CONFIG
  fi
  # The new version must accept the settings (and an existing enrollment's CA must
  # match the pin) before anything is switched.
  if ! report=$("$agent" --config "$settings" config check 2>&1 </dev/null); then
    printf '%s\n' "$report" >&2
    die "certfleet-agent $VERSION refuses the settings in ${STAGED_CONFIG:+the new }$CONFIG"
  fi

  if [ "$ENROLLED" -eq 0 ] || [ "$FORCE_ENROLL" -eq 1 ]; then
    ensure_dir "$STATE" 0700
    say "Enrolling with $COORDINATOR"
    set -- --config "$settings" enroll
    if [ -n "$NAME" ]; then set -- "$@" --name "$NAME"; fi
    if [ "$FORCE_ENROLL" -eq 1 ]; then set -- "$@" --force; fi
    for label in $LABELS; do set -- "$@" --label "$label"; done
    # The token travels in the environment: a command line is visible to every user.
    CERTFLEET_ENROLLMENT_TOKEN=$TOKEN "$agent" "$@" </dev/null
  fi

  # The switch: settings into place, then `current` to the new release in one rename.
  if [ -n "$STAGED_CONFIG" ]; then
    mv -f "$STAGED_CONFIG" "$CONFIG"
    STAGED_CONFIG=""
    say "Wrote $CONFIG"
  fi
  CURRENT_LINK_TMP=$VENV_HOME/.current.new.$$
  ln -s "releases/$(basename "$NEW_RELEASE")" "$CURRENT_LINK_TMP"
  "$PY" -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' "$CURRENT_LINK_TMP" "$VENV_HOME/current" </dev/null
  CURRENT_LINK_TMP=""
  SWITCHED=1
  ln -sf "$VENV_HOME/current/bin/certfleet-agent" "$COMMAND_LINK"
  say "Switched $VENV_HOME/current to $(basename "$NEW_RELEASE"); $COMMAND_LINK points there"

  install_service

  # Old releases go only now: a running agent may still import from its own.
  for release in "$VENV_HOME"/releases/*; do
    if [ -d "$release" ] && [ "$release" != "$NEW_RELEASE" ]; then
      rm -rf "$release"
      say "Removed the previous release $(basename "$release")"
    fi
  done
  # An install from before releases had the virtualenv in $VENV_HOME itself.
  if [ -f "$VENV_HOME/pyvenv.cfg" ]; then
    rm -rf "${VENV_HOME:?}/bin" "${VENV_HOME:?}/include" "${VENV_HOME:?}/lib" "${VENV_HOME:?}/lib64" \
      "${VENV_HOME:?}/share" "${VENV_HOME:?}/pyvenv.cfg"
    say "Removed the old single virtualenv from $VENV_HOME"
  fi
  say "Done: certfleet-agent $VERSION installed; state in $STATE, settings in $CONFIG"
}

# --- uninstall ----------------------------------------------------------------------

uninstall_agent() {
  [ -n "$ROOT" ] || [ "$(id -u)" -eq 0 ] || die "run as root, or pass --prefix DIR"
  STATE=$DEFAULT_STATE
  if [ -f "$CONFIG" ]; then
    for python in "$VENV_HOME/current/bin/python" python3; do
      if configured=$(configured_state_dir "$python" 2>/dev/null) && [ -n "$configured" ]; then
        STATE=$configured
        break
      fi
    done
  fi

  if [ -f "$UNIT" ]; then
    if manages_services && [ -d /run/systemd/system ]; then
      systemctl disable --now --quiet certfleet-agent || true
    fi
    rm -f "$UNIT"
    if manages_services && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
    say "Stopped the service and removed $UNIT"
  fi
  for plist in "$PLIST" "$LEGACY_PLIST"; do
    if [ -f "$plist" ]; then
      if manages_services; then launchctl bootout "system/$(basename "$plist" .plist)" 2>/dev/null || true; fi
      rm -f "$plist"
      say "Stopped the job and removed $plist"
    fi
  done
  if [ -d "$VENV_HOME" ]; then rm -rf "$VENV_HOME"; say "Removed $VENV_HOME"; fi
  if [ -L "$COMMAND_LINK" ]; then rm -f "$COMMAND_LINK"; say "Removed $COMMAND_LINK"; fi
  if [ -f "$CONFIG" ]; then rm -f "$CONFIG"; say "Removed $CONFIG"; fi
  # /etc/certfleet may hold the coordinator's settings too: remove it only if empty.
  rmdir "$CONFIG_DIR" 2>/dev/null || true

  if [ ! -d "$STATE" ]; then
    say "No state directory at $STATE"
  elif [ "$KEEP_STATE" -eq 1 ]; then
    say "Kept the state (identity, keys) in $STATE (--keep-state)"
  elif [ "$STATE" = / ] || { [ "$STATE" != "$DEFAULT_STATE" ] && [ ! -f "$STATE/agent.json" ]; }; then
    say "Left $STATE alone: it does not look like an agent state directory"
  else
    agent_id=$(sed -n 's/.*"agent_id": *"\([A-Za-z0-9_-]*\)".*/\1/p' "$STATE/agent.json" 2>/dev/null || true)
    rm -rf "$STATE"
    say "Removed the state in $STATE"
    if [ -n "$agent_id" ]; then
      say "Agent $agent_id is still registered with the coordinator: certfleet agents retire $agent_id"
    fi
  fi
  say "Uninstalled"
}

# --- main ---------------------------------------------------------------------------

main() {
  TOKEN=${CERTFLEET_ENROLLMENT_TOKEN:-}
  NAME=""; LABELS=""; INDEX_URL=""; PYTHON_CHOICE=""; ROOT=""
  NO_SERVICE=0; FORCE_ENROLL=0; UNINSTALL=0; KEEP_STATE=0
  COORDINATOR=$EMBEDDED_COORDINATOR
  CA_FINGERPRINT=$EMBEDDED_FINGERPRINT
  # The settings this script writes must be the ones the agent runs with: variables
  # that would override them (or leak the token to other programs) go.
  unset CERTFLEET_ENROLLMENT_TOKEN CERTFLEET_AGENT_CONFIG CERTFLEET_AGENT_DIR CERTFLEET_COORDINATOR_URL \
    CERTFLEET_CA_FINGERPRINT CERTFLEET_AGENT_SECRETS CERTFLEET_DISCOVERY_ROOTS CERTFLEET_LOG_LEVEL

  while [ $# -gt 0 ]; do
    case "$1" in
      --token) need_value "$@"; TOKEN=$2; shift 2 ;;
      --name) need_value "$@"; NAME=$2; shift 2 ;;
      --label)
        need_value "$@"
        case "$2" in
          *[!A-Za-z0-9._:/@=-]*|=*|*=*=*) die "--label takes KEY=VALUE (letters, digits and . _ : / @ -)" ;;
          ?*=*) ;;
          *) die "--label takes KEY=VALUE" ;;
        esac
        LABELS="$LABELS $2"; shift 2 ;;
      --no-service) NO_SERVICE=1; shift ;;
      --force-enroll) FORCE_ENROLL=1; shift ;;
      --pip-index-url) need_value "$@"; INDEX_URL=$2; shift 2 ;;
      --python) need_value "$@"; PYTHON_CHOICE=$2; shift 2 ;;
      --prefix) need_value "$@"; ROOT=$2; shift 2 ;;
      --coordinator) need_value "$@"; COORDINATOR=$2; shift 2 ;;
      --ca-fingerprint) need_value "$@"; CA_FINGERPRINT=$2; shift 2 ;;
      --uninstall) UNINSTALL=1; shift ;;
      --keep-state) KEEP_STATE=1; shift ;;
      -h|--help) usage; exit 0 ;;
      *) die "unknown option: $1 (see --help)" ;;
    esac
  done
  if [ "$KEEP_STATE" -eq 1 ] && [ "$UNINSTALL" -eq 0 ]; then die "--keep-state goes with --uninstall"; fi
  if [ -n "$ROOT" ]; then
    case "$ROOT" in /*) ;; *) ROOT=$(pwd)/$ROOT ;; esac
    ROOT=${ROOT%/}
    # The prefix ends up in agent.toml and the service file: keep it to plain characters.
    case "$ROOT" in
      ""|*[!A-Za-z0-9._/+-]*) die "--prefix must be a directory path of letters, digits and . _ / + -" ;;
    esac
  fi

  detect_host
  layout
  trap on_exit EXIT
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if [ "$UNINSTALL" -eq 1 ]; then
    uninstall_agent
  else
    install_agent
  fi
}

# Everything above is definitions: a shell reading this script from a pipe has read
# all of it before anything runs, so no command can swallow the rest of the script.
main "$@"
