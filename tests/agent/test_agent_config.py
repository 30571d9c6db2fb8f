"""The operator's settings (agent.toml): loading, precedence, refusals, ``config check``."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet.agent import cli
from certfleet.agent.config import AgentConfig, AgentPaths, ConfigError, check_enrolled_ca, load_settings
from certfleet.shared.pki import certificate_fingerprint

FINGERPRINT = "ab" * 32
AGENT_VARIABLES = ("CERTFLEET_AGENT_CONFIG", "CERTFLEET_AGENT_DIR", "CERTFLEET_COORDINATOR_URL",
                   "CERTFLEET_CA_FINGERPRINT", "CERTFLEET_AGENT_SECRETS", "CERTFLEET_DISCOVERY_ROOTS",
                   "CERTFLEET_LOG_LEVEL")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No agent variables, and no host-wide agent.toml, whatever this machine has."""
    for name in AGENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("certfleet.agent.config.DEFAULT_CONFIG_FILE", tmp_path / "no-such" / "agent.toml")


def write_config(directory: Path, text: str, mode: int = 0o600) -> Path:
    path = directory / "agent.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def check(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main([*argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


VALID = f"""
coordinator_url = "https://coordinator.example:8443/"
ca_fingerprint = "{FINGERPRINT.upper()}"
state_dir = "/var/lib/certfleet-agent-test"
secrets_file = "/etc/certfleet/agent-secrets.json"
discovery_roots = ["/etc/ssl", "/etc/nginx"]
log_level = "DEBUG"

[[proxy_targets]]
name = "lb-1"
kind = "f5"
address = "10.0.0.5:443"
"""


def test_a_complete_file_loads_with_every_value_normalized(tmp_path):
    settings = load_settings(write_config(tmp_path, VALID), environ={})

    assert settings.coordinator_url == "https://coordinator.example:8443"
    assert settings.ca_fingerprint == FINGERPRINT
    assert settings.state_dir == Path("/var/lib/certfleet-agent-test")
    assert settings.paths().secrets == Path("/etc/certfleet/agent-secrets.json")
    assert settings.discovery_roots == (Path("/etc/ssl"), Path("/etc/nginx"))
    assert [(t.name, t.kind, t.address) for t in settings.proxy_targets] == [("lb-1", "f5", "10.0.0.5:443")]
    assert settings.log_level_number == logging.DEBUG
    assert set(settings.sources.values()) == {"file"}


def test_without_a_file_every_value_is_a_default(tmp_path):
    settings = load_settings(None, environ={"XDG_DATA_HOME": str(tmp_path)})

    assert settings.coordinator_url is None and settings.ca_fingerprint is None
    assert settings.paths().secrets == settings.state_dir / "secrets.json"
    assert all(source == "default" for _, source in settings.effective().values())


def test_environment_overrides_the_file_and_the_command_line_overrides_both(tmp_path):
    path = write_config(tmp_path, VALID)
    env = {"CERTFLEET_LOG_LEVEL": "warning", "CERTFLEET_AGENT_DIR": "/srv/agent-from-env",
           "CERTFLEET_COORDINATOR_URL": "https://moved.example:8443",
           "CERTFLEET_DISCOVERY_ROOTS": "/opt/certs:/srv/tls"}

    from_env = load_settings(path, environ=env)
    from_flag = load_settings(path, agent_dir=tmp_path / "flag", environ=env)

    assert from_env.log_level == "warning" and from_env.sources["log_level"] == "env CERTFLEET_LOG_LEVEL"
    assert from_env.coordinator_url == "https://moved.example:8443"
    assert from_env.discovery_roots == (Path("/opt/certs"), Path("/srv/tls"))
    assert from_env.state_dir == Path("/srv/agent-from-env")
    assert from_env.sources["ca_fingerprint"] == "file"
    assert from_flag.state_dir == tmp_path / "flag"
    assert from_flag.sources["state_dir"] == "command line --agent-dir"


def test_the_config_file_can_be_named_by_the_environment(tmp_path):
    path = write_config(tmp_path, 'log_level = "error"\n')

    assert load_settings(None, environ={"CERTFLEET_AGENT_CONFIG": str(path)}).log_level == "error"


@pytest.mark.parametrize("text, named", [
    ('coordinator = "https://c.example"\n', "unknown key 'coordinator'"),
    ("log_level = 3\n", "log_level must be a string, not an integer"),
    ('discovery_roots = "/etc/ssl"\n', "discovery_roots must be an array of paths, not a string"),
    ('discovery_roots = ["etc/ssl"]\n', "discovery_roots[0] must be an absolute path"),
    ('state_dir = "relative/dir"\n', "state_dir must be an absolute path"),
    ('coordinator_url = "http://c.example"\n', "coordinator_url must be an https:// URL"),
    ('coordinator_url = "https://user:pw@c.example"\n', "coordinator_url must not carry credentials"),
    ('ca_fingerprint = "abc"\n', "ca_fingerprint must be a SHA-256 fingerprint"),
    ('log_level = "verbose"\n', "log_level must be one of debug, info, warning, error"),
    ('[[proxy_targets]]\nname = "a"\nkind = "ssh"\naddress = "h"\npassword = "x"\n',
     "proxy_targets[0]: unknown key 'password'"),
    ('[[proxy_targets]]\nname = "a"\n', "proxy_targets[0]: missing kind, address"),
    ("proxy_targets = [1]\n", "proxy_targets[0] must be a table, not an integer"),
    ("log_level = \n", "is not valid TOML"),
])
def test_bad_settings_are_refused_naming_the_key(tmp_path, text, named):
    with pytest.raises(ConfigError) as refused:
        load_settings(write_config(tmp_path, text), environ={})
    assert named in str(refused.value)


def test_a_refusal_never_repeats_the_value(tmp_path):
    """A secret pasted into the wrong key must not end up in a log."""
    with pytest.raises(ConfigError) as refused:
        load_settings(write_config(tmp_path, 'password = "hunter2-secret"\nlog_level = 7\n'), environ={})
    assert "hunter2" not in str(refused.value)


def test_a_config_file_others_may_write_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="writable by group or others"):
        load_settings(write_config(tmp_path, 'log_level = "info"\n', mode=0o664), environ={})


def test_a_named_config_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize("variable, value, named", [
    ("CERTFLEET_LOG_LEVEL", "loud", "CERTFLEET_LOG_LEVEL must be one of"),
    ("CERTFLEET_COORDINATOR_URL", "coordinator.example", "CERTFLEET_COORDINATOR_URL must be an https:// URL"),
    ("CERTFLEET_CA_FINGERPRINT", "xyz", "CERTFLEET_CA_FINGERPRINT must be a SHA-256"),
])
def test_bad_environment_overrides_are_refused_naming_the_variable(variable, value, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(None, environ={variable: value})


# --- the command ------------------------------------------------------------------------


def test_config_check_prints_each_value_and_where_it_came_from(tmp_path, capsys, monkeypatch):
    path = write_config(tmp_path, 'log_level = "warning"\ncoordinator_url = "https://c.example:8443"\n')
    monkeypatch.setenv("CERTFLEET_LOG_LEVEL", "debug")

    status, out, _ = check(capsys, "--config", str(path), "--agent-dir", str(tmp_path / "state"), "config", "check")

    assert status == 0
    lines = {line.split("=")[0].strip(): line for line in out.splitlines() if " = " in line}
    assert "debug" in lines["log_level"] and "[env CERTFLEET_LOG_LEVEL]" in lines["log_level"]
    assert "[file]" in lines["coordinator_url"]
    assert "[command line --agent-dir]" in lines["state_dir"]
    assert "[default]" in lines["discovery_roots"]
    assert "configuration is valid" in out


def test_config_check_json_is_machine_readable(tmp_path, capsys):
    status, out, _ = check(capsys, "--config", str(write_config(tmp_path, VALID)), "config", "check", "--json")

    report = json.loads(out)
    assert status == 0 and report["valid"] is True
    assert report["settings"]["ca_fingerprint"] == {"value": FINGERPRINT, "source": "file"}
    assert report["settings"]["proxy_targets"]["value"][0]["name"] == "lb-1"
    assert report["enrollment"] is None


@pytest.mark.parametrize("text", ["bogus_key = 1\n", "log_level = true\n"])
def test_config_check_exits_2_on_invalid_settings(tmp_path, capsys, text):
    path = write_config(tmp_path, text)

    status, _, err = check(capsys, "--config", str(path), "config", "check")
    json_status, json_out, _ = check(capsys, "--config", str(path), "config", "check", "--json")

    assert status == json_status == 2
    assert "bogus_key" in err or "log_level" in err
    assert json.loads(json_out)["valid"] is False


def test_every_command_refuses_invalid_settings_with_exit_2(tmp_path, capsys):
    path = write_config(tmp_path, "log_level = 1\n")

    assert check(capsys, "--config", str(path), "run")[0] == 2
    assert check(capsys, "--config", str(path), "enroll", "--token", "t")[0] == 2


def test_enroll_needs_a_coordinator_from_the_flags_or_the_config(tmp_path, capsys):
    status, _, err = check(capsys, "--agent-dir", str(tmp_path), "enroll", "--token", "t")
    assert status == 2 and "coordinator_url" in err


# --- the enrolled CA against the pin ----------------------------------------------------


def _self_signed_pem() -> tuple[bytes, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM), certificate_fingerprint(certificate)


def _enrolled_state(directory: Path) -> tuple[AgentPaths, str]:
    pem, fingerprint = _self_signed_pem()
    paths = AgentPaths(directory)
    directory.mkdir()
    paths.ca_bundle.write_bytes(pem)
    AgentConfig("https://c.example:8443", "agt_test", {}).save(paths)
    return paths, fingerprint


def test_the_enrolled_ca_must_match_the_pin(tmp_path, capsys):
    paths, fingerprint = _enrolled_state(tmp_path / "state")
    matching = load_settings(write_config(tmp_path, f'ca_fingerprint = "{fingerprint}"\n'), environ={})
    other = load_settings(None, environ={"CERTFLEET_CA_FINGERPRINT": FINGERPRINT})

    assert check_enrolled_ca(matching, paths) is True
    with pytest.raises(ConfigError, match="does not match ca_fingerprint"):
        check_enrolled_ca(other, paths)

    status, out, _ = check(capsys, "--config", str(tmp_path / "agent.toml"), "--agent-dir", str(paths.root),
                           "config", "check")
    assert status == 0 and "agt_test" in out and "matches ca_fingerprint" in out


def test_run_refuses_an_enrollment_the_pin_does_not_name(tmp_path, capsys, monkeypatch):
    paths, _ = _enrolled_state(tmp_path / "state")
    monkeypatch.setenv("CERTFLEET_CA_FINGERPRINT", FINGERPRINT)

    status, _, err = check(capsys, "--agent-dir", str(paths.root), "run")

    assert status == 2 and "does not match ca_fingerprint" in err
