"""bench/failover.py runs, with a tiny load, as a subprocess: it must exit 0
and print its figures, and no request may have been answered 500.  No
timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_failover_benchmark_prints_its_figures():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "failover.py"), "--users", "2",
                           "--before", "1.5", "--after", "5", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    (row,) = json.loads(done.stdout)["results"]
    assert row["500"] == 0 and row["503_without_retry_after"] == 0, row
    assert row["flows_per_s_before"] > 0 and row["failover_s"] is not None, row
    assert row["without_service_s"] is not None and row["sessions_verified_before"] > 0, row
    assert row["sessions_lost"] >= 0 and row["loss_window"] >= 0, row
    assert row["other_refusals"] == 0, row
