"""``vlp-medical``: Lightning ``fit``/``validate``/``test`` (core's ``domain_cli``) plus ``bench``, ``generate``,
``demo``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["bench", "demo", "generate", "main"]


def bench(
    ckpt: list[str] | None = None, suite: str | None = None, names: list[str] | None = None, out: str = "bench_results"
) -> Any:
    """Evaluate several checkpoints under one BenchX-style suite; prints one table and writes CSV/JSON/Markdown.

    Args:
        ckpt: save_pretrained folders: ``--ckpt "[runs/clip, runs/make]"`` or ``--ckpt+ runs/clip --ckpt+ runs/make``.
        suite: suite YAML (dataset, splits, classes, label source, prompt sets, seeds, fractions).
        names: display names, one per checkpoint (default: folder names).
        out: output folder for bench.csv, bench_runs.csv, bench.json and bench.md.
    """
    from vlp_medical.bench import Suite, format_table, run_bench, write_results

    if not ckpt:
        raise SystemExit("vlp-medical bench: give at least one --ckpt (a save_pretrained folder)")
    if not suite:
        raise SystemExit("vlp-medical bench: --suite (a suite YAML) is required")
    labels = names or [Path(c).name for c in ckpt]
    if len(labels) != len(ckpt) or len(set(labels)) != len(labels):
        raise SystemExit(f"vlp-medical bench: need {len(ckpt)} distinct names, got {labels}")
    spec = Suite.from_yaml(suite)
    summary, rows = run_bench(dict(zip(labels, ckpt)), spec)
    print(format_table(summary))
    paths = write_results(summary, rows, out, spec)
    print(f"wrote {', '.join(map(str, paths))}")
    return summary


def generate(out: str, n: int = 200, size: int = 128, seed: int = 0, png: bool = False) -> str:
    """Write a phantom chest-radiograph tree in the MIMIC-CXR layout (DICOM, reports, metadata/split/labeler CSVs).

    Args:
        out: output folder.
        n: frontal studies.
        size: image side (pixels).
        seed: seed.
        png: also write 8-bit PNG copies (MIMIC-CXR-JPG-style reading with --image_suffix .png).
    """
    from vlp_medical.synth import make_fake_mimic_cxr

    root = make_fake_mimic_cxr(out, n, size=size, seed=seed, formats=("dcm", "png") if png else ("dcm",), progress=True)
    print(f"wrote {n} phantom studies to {root}")
    return str(root)


def demo(out: str = "runs/demo-medical", data_dir: str | None = None, scale: str = "small", seed: int = 0) -> dict:
    """Run the embedded medical demo (same as `vlp demo medical`).

    Args:
        out: output folder for checkpoints, tables and plots.
        data_dir: cache for the generated phantoms (default: core's demo cache).
        scale: small or large.
        seed: seed.
    """
    from vlp_core.demo import DemoContext, default_cache_dir
    from vlp_medical.demo import run_demo

    ctx = DemoContext(Path(out), Path(data_dir) if data_dir else default_cache_dir() / "demo" / "medical", scale, seed)
    res = run_demo(ctx)
    print(json.dumps(res.metrics, indent=2))
    print("\n".join(res.notes))
    return res.metrics


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of ``vlp-medical``."""
    from vlp_core.cli import domain_cli

    result = domain_cli(
        "vlp-medical",
        commands={"bench": bench, "generate": generate, "demo": demo},
        args=None if argv is None else list(argv),
    )
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
