"""The shared domain CLI (LightningCLI from YAML + typed subcommands) and the `vlp demo` runner."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest

from vlp_core.cli import domain_cli
from vlp_core.demo import DemoContext, DemoResult, format_table, run_demos


def test_fit_from_packaged_yaml(tmp_path: Path) -> None:
    config = files("vlp_core") / "configs" / "shapes_clip.yaml"
    cli = domain_cli(
        "vlp-test",
        args=[
            "fit", "--config", str(config), "--trainer.max_steps=2", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.n_train=32", "--data.init_args.n_val=32", "--data.init_args.batch_size=16",
            "--model.init_args.towers.image.init_args.model_name=resnet10t",
        ],
    )  # fmt: skip
    assert cli.trainer.global_step == 2
    assert set(cli.model.towers) == {"image", "text"} and cli.model.losses[0].name == "clip"
    assert "val/loss" in cli.trainer.callback_metrics
    saved = list(tmp_path.rglob("config.yaml"))
    assert saved, "the resolved config is written next to the outputs"


def test_domain_subcommand_dispatch_parses_typed_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    calls = []

    def zeroshot(ckpt: str, labels: str = "superclass", bootstrap: int = 100) -> None:
        """Zero-shot evaluation."""
        calls.append((ckpt, labels, bootstrap))

    domain_cli(
        "vlp-x", commands={"zeroshot": zeroshot}, args=["zeroshot", "m.ckpt", "--labels", "rhythm", "--bootstrap", "5"]
    )
    assert calls == [("m.ckpt", "rhythm", 5)]
    assert domain_cli("vlp-x", commands={"zeroshot": zeroshot}, args=["--help"]) == 0
    assert "zeroshot" in capsys.readouterr().out and "Zero-shot evaluation." in zeroshot.__doc__
    with pytest.raises(SystemExit, match="unknown command 'nope'"):
        domain_cli("vlp-x", commands={"zeroshot": zeroshot}, args=["nope"])


def test_run_demos_times_each_domain_and_writes_report(tmp_path: Path) -> None:
    def fake(ctx: DemoContext) -> DemoResult:
        assert ctx.out_dir.is_dir() and ctx.data_dir.is_dir() and ctx.scale == "small"
        fig = ctx.out_dir / "plot.png"
        fig.write_bytes(b"\x89PNG\r\n\x1a\n")
        return DemoResult("fake", {"auroc": 0.95, "n": 3.0}, primary="auroc", target=0.9, figures=[fig], notes=["note"])

    def failing(ctx: DemoContext) -> DemoResult:
        return DemoResult("weak", {"auroc": 0.55}, primary="auroc", target=0.9)

    lines: list[str] = []
    results, report = run_demos(
        {"fake": fake, "weak": failing},
        out_root=tmp_path,
        progress=False,
        cache_dir=tmp_path / "cache",
        echo=lines.append,
    )
    assert [r.passed for r in results] == [True, False]
    assert all(r.seconds >= 0 for r in results) and len(lines) == 2
    text = report.read_text()
    assert "| fake | auroc | 0.9500 | ≥ 0.9 | pass |" in text and "| weak | auroc | 0.5500 | ≥ 0.9 | FAIL |" in text
    assert "![plot](fake/plot.png)" in text
    assert format_table(results).count("\n") == 3
