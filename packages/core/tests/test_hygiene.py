"""Workspace hygiene: declared imports, versions from metadata, no machine paths in what users read."""

from __future__ import annotations

import re
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from vlp_core.testing import undeclared_imports

REPO = Path(__file__).resolve().parents[3]


def _installed_vlp_packages() -> list[tuple[str, str]]:
    out = {}
    for ep in entry_points(group="vlp.plugins"):
        if ep.dist is not None and ep.dist.name.startswith("vlp-"):
            out[ep.dist.name] = ep.value.split(".")[0]
    return sorted(out.items())


@pytest.mark.parametrize(("distribution", "package"), _installed_vlp_packages())
def test_every_installed_vlp_package_declares_its_imports(distribution: str, package: str) -> None:
    # vlp_core.testing imports pytest lazily, for test suites that already have it (its dev group declares it).
    allow = {"pytest"} if distribution == "vlp-core" else set()
    missing = undeclared_imports(distribution, package, allow=allow)
    assert not missing, f"{distribution} imports modules its pyproject does not declare: {missing}"


def test_undeclared_import_checker_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "fake_vlp_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("import os\nimport torch\nfrom fake_vlp_pkg import sub\n")
    (pkg / "sub" / "__init__.py").write_text(
        "def f():\n    import wfdb  # lazy imports count\n    return wfdb\n\n"
        "try:\n    import tabulate\nexcept ImportError:  # optional: skipped\n    tabulate = None\n"
        "from scipy.signal import butter\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    # Checked against vlp-core's requirements: torch is declared there, wfdb and scipy are not.
    missing = undeclared_imports("vlp-core", "fake_vlp_pkg")
    assert set(missing) == {"wfdb", "scipy"}
    assert missing["wfdb"] == ["fake_vlp_pkg/sub/__init__.py:2"]
    sys.modules.pop("fake_vlp_pkg", None)
    sys.modules.pop("fake_vlp_pkg.sub", None)


# Absolute paths of this machine or any other (home folders, CI workspaces, temp folders).
_MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|home|root|tmp|Users|mnt|scratch|private/var)/[\w.-]+")


def test_benchmarks_md_has_no_machine_paths() -> None:
    text = (REPO / "BENCHMARKS.md").read_text()
    assert not _MACHINE_PATH.findall(text), _MACHINE_PATH.findall(text)
    commands = re.findall(r"`(uv run [^`]*)`", text)
    assert commands and all(c.startswith("uv run python benchmarks/") for c in commands), commands


def test_benchmark_scripts_print_repo_relative_commands() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from _common import repro_command
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    cmd = repro_command([str(REPO / "benchmarks" / "core_losses.py"), "--quick"])
    assert cmd == "uv run python benchmarks/core_losses.py --quick"
    for script in (REPO / "benchmarks").glob("*.py"):
        assert not _MACHINE_PATH.findall(script.read_text()), script.name


def test_demo_report_has_no_machine_paths(tmp_path: Path) -> None:
    from vlp_core.demo import DemoContext, DemoResult, run_demos

    def demo(ctx: DemoContext) -> DemoResult:
        fig = ctx.out_dir / "plot.png"
        fig.write_bytes(b"\x89PNG\r\n\x1a\n")
        return DemoResult("x", {"acc": 0.9}, primary="acc", target=0.5, figures=[fig], notes=["a note"])

    _, report = run_demos({"x": demo}, out_root=tmp_path, progress=False, cache_dir=tmp_path / "c", echo=lambda s: None)
    text = report.read_text()
    assert str(tmp_path) not in text and not _MACHINE_PATH.findall(text), text
