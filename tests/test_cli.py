"""The astrid command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from astrid.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "simulate" in out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "astrid", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("astrid ")
