"""Security headers, CORS closed by default, WWW-Authenticate on 401."""

from __future__ import annotations

import functools

import pytest

from tests.support import raw_client

SQLITE_ONLY = pytest.mark.parametrize("database_url", [None])


@SQLITE_ONLY
async def test_security_headers_on_every_answer(coordinator):
    async with raw_client(coordinator) as http:
        for path in ("/health", "/api/v1/agents", "/nope"):
            response = await http.get(path)
            assert response.headers["strict-transport-security"].startswith("max-age=")
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            assert response.headers["x-request-id"]


@SQLITE_ONLY
async def test_unauthenticated_answers_say_how_to_authenticate(coordinator):
    async with raw_client(coordinator) as http:
        response = await http.get("/api/v1/agents")
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]


@SQLITE_ONLY
async def test_cross_origin_requests_are_refused_unless_configured(coordinator):
    async with raw_client(coordinator) as http:
        preflight = await http.options("/api/v1/agents", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        simple = await http.get("/health", headers={"Origin": "https://evil.example"})
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


async def test_configured_origin_is_allowed(nursery, tmp_path):
    from certfleet.coordinator.server import run_coordinator
    from certfleet.coordinator.settings import Settings

    settings = Settings(data_dir=tmp_path / "c", listen="127.0.0.1:0", cors_origins=("https://console.example",))
    running = await nursery.start(functools.partial(run_coordinator, settings, announce_token=False))
    async with raw_client(running) as http:
        preflight = await http.options("/api/v1/agents", headers={
            "Origin": "https://console.example", "Access-Control-Request-Method": "GET"})
        simple = await http.get("/health", headers={"Origin": "https://console.example"})
    assert preflight.status_code == 204
    assert simple.headers["access-control-allow-origin"] == "https://console.example"
