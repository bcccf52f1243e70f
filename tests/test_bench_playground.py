"""`nnserve bench playground` end to end, briefly: with either viewer it plays the 6x8
spiral model alone and watched, and reports frames the viewer drew and epochs per second
(figures only: no speed is asserted)."""

import json
import os
import subprocess
import sys

import pytest

from nnserve.bench.playground import CHROMIUM


def _browser_missing():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None if os.path.exists(CHROMIUM) else f"no browser at {CHROMIUM}"


@pytest.mark.parametrize("viewer", ["process", "chromium"])
def test_the_benchmark_reports_frames_and_training_speed_alone_and_watched(tmp_path, viewer):
    if viewer == "chromium" and _browser_missing() and not os.environ.get("NNSERVE_CI"):
        pytest.skip(_browser_missing())
    out = tmp_path / "playground.json"
    finished = subprocess.run(
        [sys.executable, "-m", "nnserve.cli", "bench", "playground", "--seconds", "1", "--rounds", "1",
         "--viewer", viewer, "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    figures = json.loads(out.read_text())
    assert figures["viewer"] == viewer
    assert figures["frames_per_second"] > 0 and figures["alone"] > 0 and figures["watched"] > 0
    assert "heat-map frames/s with one viewer while training" in finished.stdout
