"""Command lines: the umbrella ``vlp`` command and the base every domain CLI (``vlp-<domain>``) is built on.

``vlp plugins`` lists installed domains; ``vlp list [KIND] [PATTERN]`` the registered names that configs and
:func:`vlp_core.registry.create` accept; ``vlp demo [DOMAIN...]`` runs the embedded demos.
A domain CLI is ``domain_cli(...)``: ``fit``/``validate``/``test``/``predict`` go to LightningCLI (YAML configs via
jsonargparse, ``--print_config``), other subcommands to plain typed functions parsed by jsonargparse.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LIGHTNING_SUBCOMMANDS", "VLPLightningCLI", "domain_cli", "main"]

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _quiet_known_warnings() -> None:
    # Frozen towers are intentionally in eval mode; Lightning's generic hint about it is noise for our users.
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Total length of .* across ranks is zero.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")


def _print_plugins() -> int:
    from vlp_core import registry
    from vlp_core.plugins import failed_plugins, load_plugins

    plugins = load_plugins(strict=False)
    kinds = (registry.MODELS, registry.TOWERS, registry.LOSSES, registry.DATASETS, registry.TRANSFORMS)
    rows = [("plug-in", "distribution", "version", "models", "towers", "losses", "datasets", "transforms", "demo")]
    for p in plugins:
        counts = [str(len(reg.list(f"{p.name}/*"))) for reg in kinds]
        rows.append((p.name, p.distribution, p.version, *counts, "yes" if p.name in registry.DEMOS else "no"))
    failed = failed_plugins()
    for info, _ in failed.values():
        rows.append((info.name, info.distribution, info.version, *("-" for _ in kinds), "ERROR"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for _, message in failed.values():
        print(f"\n{message}", file=sys.stderr)
    return 1 if failed else 0


def _print_registered(kind: str | None, pattern: str) -> int:
    """``vlp list [KIND] [PATTERN]``: registered names, the names configs use (``"class_path": "ecg/resnet1d"``)."""
    from vlp_core import registry
    from vlp_core.plugins import failed_plugins, load_plugins

    load_plugins(strict=False)
    for _, message in failed_plugins().values():
        print(f"warning: {message}", file=sys.stderr)
    regs = registry.registries()
    chosen = [kind] if kind else list(regs)
    rows = [(k, name, regs[k].target_path(name)) for k in chosen for name in regs[k].list(pattern)]
    if not rows:
        print(f"nothing registered matches {pattern!r}", file=sys.stderr)
        return 1
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for k, name, target in rows:
        print(f"{k.ljust(widths[0])}  {name.ljust(widths[1])}  {target}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from vlp_core import registry
    from vlp_core.demo import format_table, run_demos
    from vlp_core.plugins import failed_plugins, load_plugins

    load_plugins(strict=False)
    for _, message in failed_plugins().values():
        print(f"warning: {message}", file=sys.stderr)
    available = registry.DEMOS.list()
    domains = [d for d in available if d != "core"]
    if args.domains:
        unknown = [d for d in args.domains if d not in registry.DEMOS]
        if unknown:
            print(
                f"vlp demo: no demo for {', '.join(unknown)}; installed demos: {', '.join(available)}", file=sys.stderr
            )
            return 2
        chosen = list(args.domains)
    else:
        # Every installed domain; core's own self-check only when no domain demo is installed.
        chosen = domains or ["core"]
    _quiet_known_warnings()
    import logging

    import lightning  # noqa: F401 - its import sets its loggers to INFO; lower them afterwards

    # Demos print their own summary; Lightning's accelerator banners would bury it.
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    results, report = run_demos(
        {d: registry.DEMOS.get(d) for d in chosen},
        out_root=Path(args.out), scale=args.scale, seed=args.seed, progress=not args.no_progress,
    )  # fmt: skip
    print()
    print(format_table(results))
    print(f"\nreport: {report}")
    failed = [r.domain for r in results if r.passed is False]
    if failed:
        print(f"below target: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vlp`` command."""
    parser = argparse.ArgumentParser(prog="vlp", description="vision-language pretraining for medical data")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plugins", help="list installed vlp packages and what they register")
    lister = sub.add_parser("list", help="list registered names (what configs and create() accept)")
    lister.add_argument("kind", nargs="?", choices=("model", "tower", "loss", "dataset", "transform", "demo"))
    lister.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'ecg/*'")
    demo = sub.add_parser("demo", help="pretrain briefly on embedded data, evaluate zero-shot, write a report")
    demo.add_argument("domains", nargs="*", help="domains to run (default: every installed domain)")
    demo.add_argument("--out", default="runs", help="report root folder (default: runs)")
    demo.add_argument("--scale", choices=("small", "large"), default="small", help="small = time-boxed default")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    if args.command == "plugins":
        return _print_plugins()
    if args.command == "list":
        return _print_registered(args.kind, args.pattern)
    return _run_demo(args)


def _lightning_cli_class() -> type:
    from lightning.pytorch.cli import LightningCLI

    class _CLI(LightningCLI):
        """LightningCLI with vlp defaults: env-var parsing, config saved next to outputs, seed always set."""

    return _CLI


def VLPLightningCLI(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - reads like the class it builds
    """Construct the shared LightningCLI (imported lazily so ``vlp plugins`` stays fast)."""
    return _lightning_cli_class()(*args, **kwargs)


def domain_cli(
    prog: str,
    commands: dict[str, Callable[..., Any]] | None = None,
    model_class: type | None = None,
    datamodule_class: type | None = None,
    args: Sequence[str] | None = None,
    trainer_defaults: dict[str, Any] | None = None,
) -> Any:
    """Run a domain command line.

    Args:
        prog: program name (``"vlp-ecg"``).
        commands: domain subcommands, name → typed function with a docstring (``{"zeroshot": zeroshot}``).
        model_class: LightningModule base for ``fit``/``validate``/``test`` (default :class:`Pretrainer`);
            subclasses may be chosen in YAML with ``class_path``.
        datamodule_class: LightningDataModule base (default :class:`PairedDataModule`).
        args: argument list (default ``sys.argv[1:]``).
        trainer_defaults: default Trainer arguments.

    Returns:
        The subcommand's return value, or the LightningCLI object.
    """
    commands = dict(commands or {})
    from_argv = args is None
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in ("-h", "--help"):
        names = list(LIGHTNING_SUBCOMMANDS) + sorted(commands)
        print(f"usage: {prog} {{{','.join(names)}}} ...\n")
        print("  fit, validate, test, predict   Lightning training loop (--config run.yaml, --print_config)")
        for name in sorted(commands):
            doc = (commands[name].__doc__ or "").strip().splitlines()
            print(f"  {name:<30} {doc[0] if doc else ''}")
        return 0 if args else 2
    _quiet_known_warnings()
    if args[0] in commands:
        from jsonargparse import auto_cli

        return auto_cli(commands[args[0]], args=args[1:], as_positional=True, parser_mode="yaml")
    if args[0] not in LIGHTNING_SUBCOMMANDS:
        raise SystemExit(
            f"{prog}: unknown command {args[0]!r}; choose from {', '.join(LIGHTNING_SUBCOMMANDS + tuple(sorted(commands)))}"
        )
    from vlp_core.training import PairedDataModule, Pretrainer

    return VLPLightningCLI(
        model_class or Pretrainer,
        datamodule_class or PairedDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=None if from_argv else args,  # LightningCLI reads sys.argv itself (and warns when given it)
        trainer_defaults=trainer_defaults or {},
        parser_kwargs={"prog": prog, "default_env": True},
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    raise SystemExit(main())
