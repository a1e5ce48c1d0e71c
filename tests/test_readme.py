"""The README's commands cannot drift: every `instructerc ...` line of its bash blocks parses with
today's CLI and names files that exist, and the cheap ones run against the demo data."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from instructerc.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """`instructerc ...` command lines of README.md's bash blocks, continuation lines joined, comments
    and `[...]` optional-part brackets dropped; lines with a `...` placeholder left out."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("instructerc ") and "..." not in line:
                commands.append(re.sub(r"\[([^\]]*)\]", r"\1", line))
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) > 30
    assert {shlex.split(c)[1] for c in COMMANDS} >= {"prepare", "train", "eval", "baseline", "predict", "model"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_parses_and_its_files_exist(command):
    argv = shlex.split(command)[1:]
    try:
        build_parser(argv).parse_args(argv)
    except SystemExit:
        pytest.fail(f"README command no longer parses: {command}")
    for flag, value in zip(argv, argv[1:]):
        if flag == "--config":
            assert (REPO / value).is_file(), f"{command}: {value} does not exist"


def test_the_cheap_commands_run_on_the_demo_data(tmp_path, monkeypatch):
    """README's MELD prepare and no-model baselines, with its data folders pointed at data/demo and tmp."""
    monkeypatch.chdir(tmp_path)
    wanted = [c for c in COMMANDS if c.startswith("instructerc prepare --dataset meld") and "--demonstrations" not in c
              and "--format cosmic" not in c][:1]
    wanted += [c for c in COMMANDS if c.startswith("instructerc baseline") and "--kind knn" not in c]
    assert len(wanted) >= 3
    for command in wanted:
        argv = shlex.split(command)[1:]
        argv = [str(REPO / "data" / "demo") if a in ("../shared/datasets", "DATA/meld", "DATA") else a for a in argv]
        assert main(argv) == 0, command
    assert (tmp_path / "eval" / "meld-majority" / "metrics.json").is_file()
