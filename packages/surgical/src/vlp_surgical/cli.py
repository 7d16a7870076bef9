"""The ``vlp-surgical`` command: Lightning ``fit``/``validate``/``test``/``predict`` from YAML configs."""

from __future__ import annotations

from collections.abc import Sequence

from vlp_core.cli import domain_cli


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``vlp-surgical``."""
    domain_cli("vlp-surgical", commands={}, args=argv)


if __name__ == "__main__":
    main()
