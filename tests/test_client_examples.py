"""The README's example commands, run against a real server exactly as a new user runs them."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from client_support import live_server

EXAMPLES = Path(__file__).resolve().parent.parent / "clients" / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def live():
    with live_server() as running:
        yield running


def _run_example(name, target, plot):
    return subprocess.run([sys.executable, str(EXAMPLES / name), "--target", target, "--plot", str(plot)],
                          capture_output=True, text=True, timeout=120)


def test_xor_example_learns_xor_and_plots(live, tmp_path):
    """xor.py prints predictions before and after training, solves XOR and writes a PNG."""
    done = _run_example("xor.py", live.target, tmp_path / "xor.png")
    assert done.returncode == 0, done.stderr
    assert "before" in done.stdout and "after" in done.stdout and "; solved" in done.stdout
    rows = re.findall(r"^\s+([01])\s+([01]) \|\s+([01]) \|\s+([\d.]+) \|\s+([\d.]+)$", done.stdout, re.M)
    assert len(rows) == 4
    assert all((float(after) >= 0.5) == (target == "1") for _, _, target, _, after in rows)
    assert (tmp_path / "xor.png").read_bytes().startswith(PNG_SIGNATURE)
    assert done.stderr == ""  # no progress bar without a terminal


def test_digits_example_reaches_97_percent_and_plots(live, tmp_path):
    """digits.py trains load_digits through the service to >= 97% test accuracy and writes a PNG."""
    done = _run_example("digits.py", live.target, tmp_path / "digits.png")
    assert done.returncode == 0, done.stdout + done.stderr
    accuracy = float(re.search(r"^test accuracy ([\d.]+)", done.stdout, re.M).group(1))
    assert accuracy >= 0.97
    assert (tmp_path / "digits.png").read_bytes().startswith(PNG_SIGNATURE)
    assert len(live.server.registry) == 0  # the examples delete the models they create
