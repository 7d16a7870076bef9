"""Every ECG command shown in the root README and the package README is checked against the code, so the
documentation cannot drift: subcommands exist, every option is one the command accepts, `fit` configs resolve
with `--print_config`, and every repository file a command names exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vlp_ecg.cli import main

REPO = Path(__file__).resolve().parents[3]
READMES = [REPO / "README.md", REPO / "packages" / "ecg" / "README.md"]


def _commands() -> list[tuple[str, list[str]]]:
    out = []
    for readme in READMES:
        for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S):
            text = re.sub(r"\\\n\s*", " ", block)
            for line in text.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("#") or not re.search(r"\bvlp-ecg\b|vlp_ecg\.cli|\bvlp demo ecg\b", line):
                    continue
                words = shlex.split(line)
                out.append((f"{readme.name}: {line}", words))
    return out


COMMANDS = _commands()


def _ecg_args(words: list[str]) -> list[str] | None:
    """The arguments after ``vlp-ecg`` / ``-m vlp_ecg.cli`` (None for ``vlp demo ecg``)."""
    for marker in ("vlp-ecg", "vlp_ecg.cli"):
        if marker in words:  # the last occurrence (`uv run --package vlp-ecg vlp-ecg ...`)
            return words[len(words) - words[::-1].index(marker) :]
    return None


def test_readmes_show_ecg_commands() -> None:
    assert len(COMMANDS) >= 15
    assert not [c for c, _ in COMMANDS if "configs/demo.yaml" in c]  # the file that never existed


@pytest.mark.parametrize("where,words", COMMANDS, ids=[c[:90] for c, _ in COMMANDS])
def test_readme_command(where: str, words: list[str], capsys: pytest.CaptureFixture) -> None:
    args = _ecg_args(words)
    if args is None:  # `vlp demo ecg`: the demo is registered under that name
        from vlp_core.plugins import load_plugins
        from vlp_core.registry import DEMOS

        load_plugins()
        assert "ecg" in DEMOS and words[words.index("demo") + 1] == "ecg"
        return
    for w in words:  # repository files named by the command exist
        if w.startswith("packages/"):
            assert (REPO / w).exists(), f"{where}: {w} does not exist"
    if not args or args[0] == "--help":
        assert main(["--help"]) == 0
        return
    cmd = args[0]
    config = tiny = str(REPO / "packages/ecg/src/vlp_ecg/configs/tiny_synthetic.yaml")
    args = [tiny if a == "my.yaml" else a for a in args]
    if cmd == "fit":
        config = args[args.index("--config") + 1]
        with pytest.raises(SystemExit) as done:
            main([*args, "--print_config"])
        assert done.value.code in (0, None), where
        assert "class_path: vlp_ecg.models.MELP" in capsys.readouterr().out
        return
    assert config
    with pytest.raises(SystemExit) as done:
        main([cmd, "--help"])
    assert done.value.code in (0, None)
    help_text = capsys.readouterr().out
    for opt in [a for a in args[1:] if a.startswith("--")]:
        assert opt.split("=")[0] in help_text, f"{where}: {cmd} has no option {opt}"
