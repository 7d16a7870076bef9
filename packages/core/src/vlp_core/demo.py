"""`vlp demo`: run the embedded demo of every installed domain, print a results table, write a report."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["DemoContext", "DemoResult", "default_cache_dir", "format_table", "run_demos"]


@dataclass
class DemoContext:
    """What a domain demo receives.

    Attributes:
        out_dir: this domain's report folder (``runs/demo-<stamp>/<domain>``); write PNGs and files here.
        data_dir: cache folder for generated data (reused across runs).
        scale: ``"small"`` (time-boxed default) or ``"large"`` (more data and steps).
        seed: global seed.
        progress: show progress bars.
    """

    out_dir: Path
    data_dir: Path
    scale: str = "small"
    seed: int = 0
    progress: bool = True


@dataclass
class DemoResult:
    """What a domain demo returns.

    Attributes:
        domain: domain name.
        metrics: metric name → value (shown in the table and report).
        primary: key of the headline metric in ``metrics``.
        target: pass threshold of the headline metric (``None`` = informational).
        higher_is_better: direction of the target.
        figures: PNGs written under ``out_dir``.
        notes: markdown lines for the report.
    """

    domain: str
    metrics: dict[str, float]
    primary: str
    target: float | None = None
    higher_is_better: bool = True
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        value = self.metrics[self.primary]
        return value >= self.target if self.higher_is_better else value <= self.target


DemoFn = Callable[[DemoContext], DemoResult]


def default_cache_dir() -> Path:
    """``$VLP_CACHE`` or ``~/.cache/vlp``."""
    return Path(os.environ.get("VLP_CACHE", Path.home() / ".cache" / "vlp"))


def format_table(results: Sequence[DemoResult]) -> str:
    """Markdown table: domain, headline metric, value, target, verdict, seconds."""
    lines = ["| domain | metric | value | target | result | time (s) |", "|---|---|---|---|---|---|"]
    for r in results:
        value = r.metrics.get(r.primary, float("nan"))
        target = "-" if r.target is None else f"{'≥' if r.higher_is_better else '≤'} {r.target:g}"
        verdict = {None: "-", True: "pass", False: "FAIL"}[r.passed]
        lines.append(f"| {r.domain} | {r.primary} | {value:.4f} | {target} | {verdict} | {r.seconds:.1f} |")
    return "\n".join(lines)


def _write_report(run_dir: Path, results: Sequence[DemoResult], total: float) -> Path:
    lines = [
        "# vlp demo report",
        "",
        f"- date: {datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"- total time: {total:.1f} s",
        "",
        "## Results",
        "",
        format_table(results),
        "",
    ]
    for r in results:
        lines += [f"## {r.domain}", ""]
        lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in r.metrics.items()]
        lines.append("")
        lines += list(r.notes)
        for fig in r.figures:
            lines += ["", f"![{fig.stem}]({fig.relative_to(run_dir).as_posix()})"]
        lines.append("")
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def run_demos(
    demos: dict[str, DemoFn],
    out_root: Path = Path("runs"),
    scale: str = "small",
    seed: int = 0,
    progress: bool = True,
    cache_dir: Path | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[list[DemoResult], Path]:
    """Run ``demos`` in order, timing each; write ``<out_root>/demo-<stamp>/report.md``.

    Returns:
        The results and the report path.
    """
    from tqdm.auto import tqdm

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out_root) / f"demo-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "demo"
    results: list[DemoResult] = []
    start = time.perf_counter()
    bar = tqdm(list(demos.items()), desc="vlp demo", unit="domain", disable=not progress)
    for name, fn in bar:
        bar.set_postfix_str(name)
        ctx = DemoContext(run_dir / name, cache / name, scale=scale, seed=seed, progress=progress)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        ctx.data_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        result = fn(ctx)
        result.seconds = time.perf_counter() - t0
        if result.primary not in result.metrics:
            raise KeyError(
                f"demo {name!r} reported primary metric {result.primary!r} but metrics {sorted(result.metrics)}"
            )
        results.append(result)
        echo(f"[{name}] {result.primary} = {result.metrics[result.primary]:.4f} in {result.seconds:.1f} s")
    total = time.perf_counter() - start
    report = _write_report(run_dir, results, total)
    return results, report
