"""The host's ``commands.allow`` and ``paths.allow`` bound what any target can make
the agent run and write, whatever the coordinator signs."""

from __future__ import annotations

import sys

import msgspec
import pytest

from certfleet.agent.deployers import Bundle, DeployError, Deployers
from certfleet.agent.policy import HostPolicy, PolicyRefused
from certfleet.agent.secrets import Secrets
from certfleet.agent.state import AgentState
from certfleet.shared import wire


def _bundle() -> Bundle:
    return Bundle(b"-----CERT-----\n", b"", b"-----KEY-----\n", "0" * 64)


def _policy(tmp_path, *, commands: str | None = None, paths: str | None = None) -> HostPolicy:
    policy = HostPolicy(tmp_path / "commands.allow", tmp_path / "paths.allow")
    if commands is not None:
        policy.commands_file.write_text(commands)
    if paths is not None:
        policy.paths_file.write_text(paths)
    return policy


def test_without_allow_files_everything_is_allowed_and_said(tmp_path):
    policy = _policy(tmp_path)
    policy.check_commands(["/bin/true"], ("nginx", "-t"))
    policy.check_paths(tmp_path / "anywhere" / "cert.pem")
    assert len(policy.unrestricted()) == 2


def test_listed_commands_are_allowed_whole_with_a_star_for_any_further_arguments(tmp_path):
    policy = _policy(tmp_path, commands="# config tests and reloads\n/bin/true -t\ntrue reload *\nsh  # no arguments\n")
    policy.check_commands(["/bin/true", "-t"], ["true", "-t"], ["/bin/true", "reload"],
                          ["true", "reload", "nginx", "now"], ["sh"])
    for refused in (["/bin/true"], ["/bin/true", "-t", "-c", "/etc/shadow"], ["sh", "-c", "id"], ["/bin/false"]):
        with pytest.raises(PolicyRefused, match="is not listed"):
            policy.check_commands(refused)
    with pytest.raises(PolicyRefused, match="not found on PATH"):
        policy.check_commands(["certfleet-no-such-program"])


def test_a_symlink_to_an_allowed_program_is_not_that_program(tmp_path):
    """``reboot`` is often a link to ``systemctl``: allowing ``systemctl reload nginx``
    must not allow it."""
    alias = tmp_path / "reboot"
    alias.symlink_to("/bin/true")
    policy = _policy(tmp_path, commands="/bin/true *\n")
    policy.check_commands(["/bin/true", "anything"])
    with pytest.raises(PolicyRefused, match="is not listed"):
        policy.check_commands([str(alias)])


def test_paths_must_lie_under_a_listed_directory_even_through_symlinks(tmp_path):
    allowed = tmp_path / "tls"
    (allowed / "site").mkdir(parents=True)
    policy = _policy(tmp_path, paths=f"{allowed}\n")
    policy.check_paths(allowed / "site" / "cert.pem", allowed / "new-dir" / "key.pem")
    with pytest.raises(PolicyRefused, match="outside the directories"):
        policy.check_paths(tmp_path / "etc" / "shadow")
    escape = allowed / "escape"
    escape.symlink_to(tmp_path)  # a symlink inside the allowed tree pointing out of it
    with pytest.raises(PolicyRefused, match="outside the directories"):
        policy.check_paths(escape / "passwd")
    with pytest.raises(PolicyRefused, match="outside the directories"):
        policy.check_paths(tmp_path / "tls-other" / "cert.pem")  # a prefix is not a parent


def test_an_allow_file_others_can_write_is_refused(tmp_path):
    policy = _policy(tmp_path, commands="/bin/true\n")
    policy.commands_file.chmod(0o666)
    with pytest.raises(PolicyRefused, match="writable by group or others"):
        policy.check_commands(["/bin/true"])


async def test_a_target_the_policy_refuses_writes_nothing(tmp_path):
    site = tmp_path / "site"
    policy = _policy(tmp_path, commands="/bin/true\n", paths=f"{site}\n")
    deployers = Deployers(AgentState(tmp_path / "state.db"), Secrets(tmp_path / "secrets.json"), policy)

    async def refused(target) -> str:
        with pytest.raises(DeployError) as caught:
            await deployers.deploy("ord_refused", target, _bundle(), server_name="www.example.test")
        assert caught.value.step == "prepare"
        return caught.value.detail

    assert "is not listed" in await refused(wire.NginxTarget(
        certificate_path=str(site / "cert.pem"), key_path=str(site / "key.pem"), test_command=["/bin/true"],
        reload_command=[sys.executable, "-c", "print"]))
    assert "outside the directories" in await refused(wire.NginxTarget(
        certificate_path=str(site / "cert.pem"), key_path=str(tmp_path / "elsewhere" / "key.pem"),
        test_command=["/bin/true"], reload_command=["/bin/true"]))
    assert "outside the directories" in await refused(wire.KeystoreTarget(
        path=str(tmp_path / "keystore.p12"), password_secret="store"))
    assert "outside the directories" in await refused(wire.HaproxyTarget(
        certificate_path=str(site / "site.pem"), test_command=["/bin/true"], master_socket="/run/haproxy.sock",
        verify=wire.TlsCheck(port=443)))
    assert "outside the directories" in await refused(wire.KubernetesSecretTarget(
        namespace="web", name="site-tls", kubeconfig="/etc/kubernetes/admin.conf"))
    assert not site.exists() and not (tmp_path / "elsewhere").exists()

    allowed = wire.NginxTarget(certificate_path=str(site / "cert.pem"), key_path=str(site / "key.pem"),
                               test_command=["/bin/true"], reload_command=["/bin/true"])
    outcome = await deployers.deploy("ord_allowed", allowed, _bundle(), server_name="www.example.test")
    assert outcome.reloaded and (site / "key.pem").read_bytes() == b"-----KEY-----\n"


def _device(kind: str, address: str):
    from certfleet.agent.config import ProxyTarget

    return ProxyTarget(name=f"{kind}-device", kind=kind, address=address)


async def test_proxy_targets_reach_only_the_devices_the_host_lists(tmp_path):
    """A proxy target sends a password from this host's secrets to a device: a target
    edited to point at another host (its key pinned) must not receive it."""
    from certfleet.shared.targets import F5Target, SshTarget

    ssh = SshTarget(host="switch1.example.test", port=2222, username="admin", host_key="SHA256:" + "A" * 43,
                    auth_secret="switch-password", certificate_path="/etc/cert.pem", key_path="/etc/key.pem")
    f5 = F5Target(url="https://bigip.example.test/", credentials_secret="bigip", profile="clientssl",
                  object_name="www", server_fingerprint="ab" * 32)
    policy = HostPolicy(tmp_path / "commands.allow", tmp_path / "paths.allow",
                        [_device("ssh", "switch1.example.test:2222"), _device("f5", "https://BIGIP.example.test")])
    policy.check_device("ssh", ssh)
    policy.check_device("f5", f5)

    elsewhere = msgspec.structs.replace(ssh, host="attacker.example.test")
    other_port = msgspec.structs.replace(ssh, port=22)
    for target in (elsewhere, other_port):
        with pytest.raises(PolicyRefused, match="not among the proxy_targets"):
            policy.check_device("ssh", target)
    with pytest.raises(PolicyRefused):
        policy.check_device("f5", msgspec.structs.replace(f5, url="https://bigip.example.test:8443/"))
    with pytest.raises(PolicyRefused):  # an ssh device listed does not admit an f5 target at the same host
        HostPolicy(tmp_path / "c", tmp_path / "p", [_device("ssh", "bigip.example.test:443")]).check_device("f5", f5)

    # Through the deployers: refused before any connection, and without a policy listing it.
    deployers = Deployers(AgentState(tmp_path / "state.db"), Secrets(tmp_path / "secrets.json"),
                          HostPolicy(tmp_path / "commands.allow", tmp_path / "paths.allow"))
    with pytest.raises(DeployError, match="not among the proxy_targets"):
        await deployers.deploy("ord-1", ssh, _bundle(), server_name="switch1.example.test")
    with pytest.raises(DeployError, match="not among the proxy_targets"):
        await deployers.check(f5, server_name="bigip.example.test", expected=None)


def test_the_settings_refuse_a_proxy_target_they_cannot_match(tmp_path):
    from certfleet.agent.config import ConfigError, load_settings

    config = tmp_path / "agent.toml"
    config.write_text('[[proxy_targets]]\nname = "x"\nkind = "ftp"\naddress = "x:21"\n')
    with pytest.raises(ConfigError, match="kind must be ssh or f5"):
        load_settings(config, environ={})
    config.write_text('[[proxy_targets]]\nname = "x"\nkind = "ssh"\naddress = "[::1]:port"\n')
    with pytest.raises(ConfigError, match="address must be"):
        load_settings(config, environ={})
