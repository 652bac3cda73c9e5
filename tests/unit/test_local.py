"""`make run`'s foreground loop: Ctrl-C and SIGTERM both end in the graceful stop."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

# Stands in for run_local's foreground loop and its try/finally (without starting Ray).
_FOREGROUND = """
import time
from qure_ray.local import stop_on_sigterm
stop_on_sigterm()
print("waiting", flush=True)
try:
    while True:
        time.sleep(3600)
except KeyboardInterrupt:
    print("stopping", flush=True)
finally:
    print("stopped gracefully", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_both_reach_the_graceful_stop(signum: signal.Signals) -> None:
    process = subprocess.Popen([sys.executable, "-c", _FOREGROUND], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "waiting"
    process.send_signal(signum)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert output.split() == ["stopping", "stopped", "gracefully"]
