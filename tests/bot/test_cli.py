"""The `pilot` command line: instant help, every command resolves, clean errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot import cli


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"  {name} " in out


def test_help_imports_no_heavy_package() -> None:
    heavy = "{'torch', 'ultralytics', 'pygame', 'cv2'}"
    code = f"import sys; from bot import cli; cli.main(['--help']); print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_every_command_resolves() -> None:
    for spec, _ in cli.COMMANDS.values():
        assert callable(cli.resolve(spec))


def test_console_scripts_are_installed() -> None:
    bin_dir = Path(sys.executable).parent
    for script in ("pilot", "train_strategist", "train_tactician", "train_executor", "finetune_vlm"):
        assert (bin_dir / script).exists(), script
