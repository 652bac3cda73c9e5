"""`make run`'s foreground loop (`run_until_stopped`): Ctrl-C and SIGTERM both end in the graceful stop."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

# run_local's loop with stand-ins for Serve and Ray. SIGINT gets Python's default handler, as in a terminal:
# a test runner started in the background inherits SIGINT ignored.
_FOREGROUND = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from qure_ray.local import run_until_stopped

def drain():
    print("draining", flush=True)
    if sys.argv[1] == "slow":
        time.sleep(60)

run_until_stopped(lambda: print("started", flush=True), drain=drain, stop=lambda: print("stopped", flush=True))
"""


@pytest.fixture
def foreground(request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", _FOREGROUND, request.param], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "started"
        yield process
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("foreground", ["quick"], indirect=True)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_both_drain_then_stop(foreground: subprocess.Popen[str], signum: signal.Signals) -> None:
    foreground.send_signal(signum)
    output, _ = foreground.communicate(timeout=30)
    assert foreground.returncode == 0
    assert output.splitlines() == ["stopping...", "draining", "stopped"]


@pytest.mark.parametrize("foreground", ["slow"], indirect=True)
def test_a_second_signal_cuts_the_drain_short_but_still_stops(foreground: subprocess.Popen[str]) -> None:
    assert foreground.stdout is not None
    foreground.send_signal(signal.SIGTERM)
    assert [foreground.stdout.readline().strip() for _ in range(2)] == ["stopping...", "draining"]
    foreground.send_signal(signal.SIGTERM)
    output, _ = foreground.communicate(timeout=30)
    assert foreground.returncode == 0
    assert output.splitlines() == ["stopping at once (second signal)", "stopped"]
