"""``/install/agent.sh`` and ``/install/wheels/``: the files the agent one-liner fetches."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re

import pytest

from certfleet.coordinator.agent_installer import AgentInstaller, checkout_root
from certfleet.coordinator.http import create_app
from tests.support import ca_fingerprint, raw_client

SQLITE_ONLY = pytest.mark.parametrize("database_url", [None])
VERSION = importlib.metadata.version("certfleet-coordinator")
SHIPPED = {f"certfleet_shared-{VERSION}-py3-none-any.whl": b"shared wheel bytes",
           f"certfleet_agent-{VERSION}-py3-none-any.whl": b"agent wheel bytes"}


def shipped_installer(running, directory, *, wheels=SHIPPED, public_url=None) -> AgentInstaller:
    """An installer serving what was shipped into ``directory/installer`` (no checkout)."""
    (directory / "installer" / "wheels").mkdir(parents=True)
    (directory / "installer" / "install-agent.sh").write_text(
        "#!/bin/sh\nURL='@CERTFLEET_COORDINATOR_URL@'\nFP='@CERTFLEET_CA_FINGERPRINT@'\n")
    for name, body in wheels.items():
        (directory / "installer" / "wheels" / name).write_bytes(body)
    return AgentInstaller(directory, ca_fingerprint=ca_fingerprint(running), checkout=None, public_url=public_url)


@SQLITE_ONLY
async def test_the_script_carries_the_coordinator_url_and_ca_fingerprint(coordinator):
    async with raw_client(coordinator) as http:
        response = await http.get("/install/agent.sh")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/x-shellscript")
    script = response.text
    assert f"EMBEDDED_COORDINATOR='{coordinator.url}'" in script
    assert f"EMBEDDED_FINGERPRINT='{ca_fingerprint(coordinator)}'" in script
    assert "@CERTFLEET_" not in script
    # The rest is the repository's script, unchanged.
    assert script.startswith("#!/bin/sh\n# Install, upgrade or remove the certfleet agent")


@SQLITE_ONLY
@pytest.mark.parametrize("path", [
    "/install/wheels/..%2F..%2Fmaster.key",
    "/install/wheels/../../master.key",
    "/install/wheels/%2e%2e%2fmaster.key",
    f"/install/wheels/certfleet_agent-{VERSION}-py3-none-any.whl%00.txt",
    "/install/wheels/certfleet_agent-1.0-py3-none-any.whl/extra",
    "/install/wheels/master.key",
    "/install/wheels/..",
    "/install/../master.key",
])
async def test_hostile_wheel_names_are_not_found(coordinator, path):
    async with raw_client(coordinator) as http:
        response = await http.get(path)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@SQLITE_ONLY
async def test_a_forged_host_header_cannot_inject_into_the_script(coordinator):
    async with raw_client(coordinator) as http:
        response = await http.get("/install/agent.sh", headers={"Host": "evil.example';rm -rf /;'"})
    assert response.status_code == 400


@SQLITE_ONLY
async def test_the_plain_http_listener_serves_no_installer(coordinator, tmp_path):
    app = create_app(coordinator.coordinator, plain_http=True, installer=shipped_installer(coordinator, tmp_path))
    assert not [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/install")]


@SQLITE_ONLY
async def test_shipped_wheels_are_listed_with_their_digests_and_served(coordinator, tmp_path):
    app = create_app(coordinator.coordinator, installer=shipped_installer(coordinator, tmp_path))
    client = app.test_client()

    index = await client.get("/install/wheels/")
    page = (await index.get_data()).decode()
    links = dict(re.findall(r'href="([^"#]+)#sha256=([0-9a-f]{64})"', page))
    assert index.status_code == 200
    assert links == {name: hashlib.sha256(body).hexdigest() for name, body in SHIPPED.items()}
    for name, body in SHIPPED.items():
        response = await client.get(f"/install/wheels/{name}")
        assert response.status_code == 200 and await response.get_data() == body


@SQLITE_ONLY
async def test_wheels_of_another_version_are_not_served(coordinator, tmp_path):
    old = {name.replace(VERSION, "0.0.1"): body for name, body in SHIPPED.items()}
    app = create_app(coordinator.coordinator, installer=shipped_installer(coordinator, tmp_path, wheels=old))
    client = app.test_client()

    index = await client.get("/install/wheels/")
    wheel = await client.get(f"/install/wheels/{next(iter(old))}")

    assert index.status_code == wheel.status_code == 404
    assert index.content_type == "application/problem+json"


@SQLITE_ONLY
async def test_a_configured_public_url_is_what_the_script_carries(coordinator, tmp_path):
    installer = shipped_installer(coordinator, tmp_path, public_url="https://certs.example.net:8443")
    client = create_app(coordinator.coordinator, installer=installer).test_client()

    script = (await (await client.get("/install/agent.sh")).get_data()).decode()

    assert "URL='https://certs.example.net:8443'" in script


def test_a_coordinator_run_from_this_checkout_finds_it():
    root = checkout_root()
    assert root is not None and (root / "installers" / "install-agent.sh").is_file()


@SQLITE_ONLY
async def test_a_failed_build_answers_500_without_internals_and_is_tried_again(coordinator, tmp_path, caplog):
    """A checkout without the agent's source tree cannot build: the client learns
    nothing about the server, the log says why, and the next request tries again."""
    broken = tmp_path / "checkout"
    (broken / "installers").mkdir(parents=True)
    installer = AgentInstaller(tmp_path / "data", ca_fingerprint=ca_fingerprint(coordinator), checkout=broken)
    client = create_app(coordinator.coordinator, installer=installer).test_client()

    first = await client.get("/install/wheels/")
    second = await client.get("/install/wheels/")

    assert first.status_code == second.status_code == 500
    assert str(broken) not in (await first.get_data()).decode()
    assert sum("could not build the agent's wheels" in record.getMessage() for record in caplog.records) == 2
