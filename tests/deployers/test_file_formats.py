"""Traefik and Envoy targets, checked against the file formats their documentation
defines (neither is packaged for Debian, so no server reads them here):

* Traefik's file provider, "TLS" → "User defined": a dynamic configuration with
  ``tls.certificates`` as a list of ``certFile`` / ``keyFile`` pairs, in YAML or TOML;
* Envoy's "Secret discovery service", ``path_config_source``: a ``DiscoveryResponse``
  whose ``resources`` hold one ``envoy.extensions.transport_sockets.tls.v3.Secret``
  with ``tls_certificate.certificate_chain`` and ``private_key`` as ``inline_string``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from certfleet.shared.targets import EnvoyTarget, TraefikTarget

NAME = "app.certfleet.test"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def identity(*paths: Path) -> dict[Path, tuple[int, int]]:
    return {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in paths}


# --- Traefik --------------------------------------------------------------------------


def traefik_target(tmp_path: Path, extension: str = "yml") -> TraefikTarget:
    return TraefikTarget(certificate_path=str(tmp_path / "traefik" / "certs" / "app.pem"),
                         key_path=str(tmp_path / "traefik" / "certs" / "app.key"),
                         dynamic_config_path=str(tmp_path / "traefik" / "dynamic" / f"certfleet.{extension}"))


@pytest.mark.parametrize("extension", ["yml", "yaml"])
async def test_traefik_yaml_lists_the_certificate_and_key(tmp_path, deployers, issuer, extension):
    target, bundle = traefik_target(tmp_path, extension), issuer.issue(NAME)

    outcome = await deployers.deploy("order-1", target, bundle, server_name=NAME)

    assert outcome.changed == (target.certificate_path, target.key_path, target.dynamic_config_path)
    assert not outcome.reloaded and outcome.served_fingerprint is None
    # PyYAML is not a dependency, so the text is held to the documented shape exactly:
    # block mappings, one list item, double-quoted (JSON-compatible) scalars.
    assert Path(target.dynamic_config_path).read_text() == (
        f"# Written by certfleet-agent; certificate sha256 {bundle.fingerprint_sha256}\n"
        "tls:\n"
        "  certificates:\n"
        f'    - certFile: "{target.certificate_path}"\n'
        f'      keyFile: "{target.key_path}"\n')
    assert Path(target.certificate_path).read_bytes() == bundle.certificate + bundle.chain
    assert Path(target.key_path).read_bytes() == bundle.private_key
    assert (mode(Path(target.certificate_path)), mode(Path(target.key_path)),
            mode(Path(target.dynamic_config_path))) == (0o644, 0o600, 0o644)


async def test_traefik_toml_lists_the_certificate_and_key(tmp_path, deployers, issuer):
    target, bundle = traefik_target(tmp_path, "toml"), issuer.issue(NAME)

    await deployers.deploy("order-1", target, bundle, server_name=NAME)

    text = Path(target.dynamic_config_path).read_text()
    assert tomllib.loads(text) == {
        "tls": {"certificates": [{"certFile": target.certificate_path, "keyFile": target.key_path}]}}
    assert text.startswith(f"# Written by certfleet-agent; certificate sha256 {bundle.fingerprint_sha256}\n")
    assert Path(target.certificate_path).read_bytes() == bundle.certificate + bundle.chain
    assert Path(target.key_path).read_bytes() == bundle.private_key
    assert mode(Path(target.key_path)) == 0o600


@pytest.mark.parametrize("extension", ["yml", "toml"])
async def test_traefik_same_certificate_again_is_skipped(tmp_path, deployers, issuer, extension):
    target, bundle = traefik_target(tmp_path, extension), issuer.issue(NAME)
    await deployers.deploy("order-1", target, bundle, server_name=NAME)
    written = identity(Path(target.certificate_path), Path(target.key_path), Path(target.dynamic_config_path))

    again = await deployers.deploy("order-2", target, bundle, server_name=NAME)

    assert again.skipped and not again.reloaded
    assert identity(*written) == written


async def test_traefik_new_certificate_changes_the_config_fingerprint(tmp_path, deployers, issuer):
    target, first, second = traefik_target(tmp_path), issuer.issue(NAME), issuer.issue(NAME)
    config = Path(target.dynamic_config_path)
    await deployers.deploy("order-1", target, first, server_name=NAME)
    before = config.read_text()

    outcome = await deployers.deploy("order-2", target, second, server_name=NAME)

    # Same paths, new comment: the file changes, so Traefik's watcher reloads it.
    assert target.dynamic_config_path in outcome.changed
    after = config.read_text()
    assert first.fingerprint_sha256 in before and first.fingerprint_sha256 not in after
    assert f"certificate sha256 {second.fingerprint_sha256}\n" in after
    assert after.splitlines()[1:] == before.splitlines()[1:]
    assert Path(target.certificate_path).read_bytes() == second.certificate + second.chain


# --- Envoy ----------------------------------------------------------------------------


def envoy_target(tmp_path: Path, extension: str = "json") -> EnvoyTarget:
    return EnvoyTarget(sds_path=str(tmp_path / "envoy" / f"sds-app.{extension}"), secret_name="app_tls")


@pytest.mark.parametrize("extension", ["json", "yaml"])
async def test_envoy_sds_file_is_a_discovery_response_with_one_tls_secret(tmp_path, deployers, issuer, extension):
    target, bundle = envoy_target(tmp_path, extension), issuer.issue(NAME)

    outcome = await deployers.deploy("order-1", target, bundle, server_name=NAME)

    assert outcome.changed == (target.sds_path,) and not outcome.reloaded
    assert mode(Path(target.sds_path)) == 0o600
    # JSON whatever the extension: a JSON document is also YAML (1.2) Envoy accepts.
    document = json.loads(Path(target.sds_path).read_text())
    assert list(document) == ["resources"] and len(document["resources"]) == 1
    secret = document["resources"][0]
    assert secret == {
        "@type": SECRET_TYPE,
        "name": "app_tls",
        "tls_certificate": {
            "certificate_chain": {"inline_string": (bundle.certificate + bundle.chain).decode()},
            "private_key": {"inline_string": bundle.private_key.decode()},
        },
    }


async def test_envoy_same_secret_again_is_skipped(tmp_path, deployers, issuer):
    target, bundle = envoy_target(tmp_path), issuer.issue(NAME)
    await deployers.deploy("order-1", target, bundle, server_name=NAME)
    written = identity(Path(target.sds_path))

    again = await deployers.deploy("order-2", target, bundle, server_name=NAME)

    assert again.skipped and not again.reloaded
    assert identity(*written) == written


async def test_envoy_new_certificate_replaces_the_file(tmp_path, deployers, issuer):
    target, first, second = envoy_target(tmp_path), issuer.issue(NAME), issuer.issue(NAME)
    await deployers.deploy("order-1", target, first, server_name=NAME)
    before = identity(Path(target.sds_path))

    outcome = await deployers.deploy("order-2", target, second, server_name=NAME)

    # A new inode: the file was renamed into place, the move Envoy's watcher reacts to.
    assert outcome.changed == (target.sds_path,)
    assert identity(Path(target.sds_path))[Path(target.sds_path)][0] != before[Path(target.sds_path)][0]
    chain = json.loads(Path(target.sds_path).read_text())["resources"][0]["tls_certificate"]["certificate_chain"]
    assert chain["inline_string"] == (second.certificate + second.chain).decode()
    assert mode(Path(target.sds_path)) == 0o600
