"""Cross-package checks: every domain is discovered through entry points, and domains never import each other."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("ecg", "medical", "surgical", "ct3d")


def test_all_four_domains_register_through_entry_points() -> None:
    from vlp_core.plugins import load_plugins

    plugins = {p.name: p for p in load_plugins()}  # strict: a broken plug-in fails this test
    for domain in DOMAINS:
        assert plugins[domain].distribution == f"vlp-{domain}"
        assert re.fullmatch(r"\d+\.\d+\.\d+", plugins[domain].version)
    from vlp_core import registry

    for domain in DOMAINS:
        assert registry.TOWERS.list(f"{domain}/*"), f"{domain} registered no tower"


def test_vlp_plugins_command_lists_the_domains() -> None:
    out = subprocess.run([sys.executable, "-m", "vlp_core.cli", "plugins"], capture_output=True, text=True, check=True)
    listed = {line.split()[0] for line in out.stdout.splitlines()[1:] if line.strip()}
    assert set(DOMAINS) | {"core"} <= listed


@pytest.mark.parametrize("domain", DOMAINS)
def test_domains_do_not_import_each_other(domain: str) -> None:
    others = [d for d in DOMAINS if d != domain]
    pattern = re.compile(rf"^\s*(from|import)\s+vlp_({'|'.join(others)})\b", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "packages" / domain).rglob("*.py")
        if ".venv" not in p.parts and pattern.search(p.read_text())
    ]
    assert not offenders, f"vlp-{domain} imports a sibling domain in {offenders}; shared code belongs in vlp-core"


@pytest.mark.parametrize("member", ("core", *DOMAINS))
def test_member_metadata(member: str) -> None:
    meta = tomllib.loads((ROOT / "packages" / member / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["name"] == f"vlp-{member}" and re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["requires-python"] == ">=3.11"
    assert not any("torch" in r for r in meta["build-system"]["requires"]), "never put torch in build requirements"
    assert project["entry-points"]["vlp.plugins"][member] == f"vlp_{member}.plugin:register"
    if member != "core":
        assert any(re.fullmatch(r"vlp-core>=0\.\d+,<1", d) for d in project["dependencies"])
        assert f"vlp-{member}" in project["scripts"]
    # torch comes from the package index as a plain floor; no index or local wheel configuration in members.
    assert "index" not in meta.get("tool", {}).get("uv", {})
