"""Reference pages generated from the code must match the code."""

from __future__ import annotations

from pathlib import Path

from certfleet.coordinator.auth.rbac import role_table_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_permission_reference_matches_the_catalogue():
    page = (ROOT / "docs" / "reference" / "permissions.md").read_text()
    assert page == role_table_markdown(), (
        "docs/reference/permissions.md is stale: regenerate it with"
        " `certfleet permissions --markdown > docs/reference/permissions.md`")
