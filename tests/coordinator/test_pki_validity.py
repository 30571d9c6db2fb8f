"""Validity periods as issued: the requested lifetime is the whole period (RFC 5280
§4.1.2.5 counts notBefore through notAfter inclusive, backdating included), a
lifetime the issuer cannot cover is refused rather than cut short, bounds are named
in days, and a certificate created without a lifetime gets its profile's."""

from __future__ import annotations

import pytest
from cryptography import x509

from certfleet.coordinator.client import ApiError
from certfleet.shared import wire
from tests.pki_support import issue_through_agent
from tests.support import admin_client, enroll_agent

DAY = 86400


async def _problem(call) -> dict:
    with pytest.raises(ApiError) as refused:
        await call
    return {"status": refused.value.status, **refused.value.problem}


def _period(target) -> int:
    """The validity period in seconds, both ends counted (§4.1.2.5)."""
    leaf = x509.load_pem_x509_certificate((target / "cert.pem").read_bytes())
    return int((leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds()) + 1


async def test_the_lifetime_asked_for_is_the_whole_validity_period(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    longest = await issue_through_agent(api, agent, ["long.example.test"], tmp_path / "long",
                                        lifetime_seconds=398 * DAY)
    assert longest.status == "deployed"
    assert _period(tmp_path / "long") == 398 * DAY
    assert longest.not_after - longest.not_before + 1 == longest.lifetime_seconds == 398 * DAY
    short = await issue_through_agent(api, agent, ["short.example.test"], tmp_path / "short", lifetime_seconds=3600)
    assert short.status == "deployed"
    assert _period(tmp_path / "short") == 3600


async def test_a_lifetime_beyond_the_issuers_expiry_is_refused_not_cut_short(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    brief = await api.call("issuers.create-intermediate", wire.IntermediateCreate(
        name="brief", parent="iss_root", lifetime_days=10))
    await api.call("profiles.create", wire.ProfileCreate(name="on-brief", issuer=brief.id))
    refused = await _problem(api.call("certificates.create", wire.CertificateCreate(
        common_name="long.example.test", agent_id=agent.config.agent_id, profile="on-brief",
        lifetime_seconds=30 * DAY, target=wire.FileTarget(directory=str(tmp_path / "long")))))
    assert refused["status"] == 422 and refused["type"].endswith("lifetime-beyond-issuer"), refused
    assert "brief" in refused["detail"] and "shorter lifetime" in refused["detail"]
    assert await api.call("certificates.list") == []
    # Inside the issuer's life it is issued in full.
    fits = await issue_through_agent(api, agent, ["fits.example.test"], tmp_path / "fits", profile="on-brief",
                                     lifetime_seconds=5 * DAY)
    assert fits.status == "deployed" and _period(tmp_path / "fits") == 5 * DAY


async def test_the_lifetime_ceiling_is_named_in_days(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    for lifetime, words in ((399 * DAY, "at most 398 days"), (60, "at least 5 minutes")):
        refused = await _problem(api.call("certificates.create", wire.CertificateCreate(
            common_name="x.example.test", agent_id=agent.config.agent_id, lifetime_seconds=lifetime,
            target=wire.FileTarget(directory=str(tmp_path / "x")))))
        assert refused["status"] == 400 and words in refused["detail"], refused
        assert "Expected" not in refused["detail"]


async def test_without_a_lifetime_the_profile_chooses(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    await api.call("profiles.create", wire.ProfileCreate(
        name="monthly", policy=wire.ProfilePolicy(default_lifetime_seconds=30 * DAY)))
    await api.call("profiles.create", wire.ProfileCreate(
        name="weekly-cap", policy=wire.ProfilePolicy(max_lifetime_seconds=7 * DAY)))
    chosen = {}
    for profile in ("default", "monthly", "weekly-cap"):
        created = await api.call("certificates.create", wire.CertificateCreate(
            common_name=f"{profile}.example.test", agent_id=agent.config.agent_id, profile=profile,
            target=wire.FileTarget(directory=str(tmp_path / profile))))
        chosen[profile] = created.lifetime_seconds
    assert chosen == {"default": 90 * DAY, "monthly": 30 * DAY, "weekly-cap": 7 * DAY}


async def test_a_profiles_default_lifetime_must_fit_its_maximum(coordinator):
    api, _ = await admin_client(coordinator)
    refused = await _problem(api.call("profiles.create", wire.ProfileCreate(name="muddled", policy=wire.ProfilePolicy(
        max_lifetime_seconds=30 * DAY, default_lifetime_seconds=90 * DAY))))
    assert refused["status"] == 422 and refused["type"].endswith("invalid-policy"), refused
    assert "default_lifetime_seconds" in refused["detail"] and "30 days" in refused["detail"]
    assert "muddled" not in [p.name for p in await api.call("profiles.list")]
