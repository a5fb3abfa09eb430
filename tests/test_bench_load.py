"""bench/load.py end to end with tiny sizes: it runs, prints its figures, fails no flow.

A private redis-server, the fake SMSC and one daemon (twistd), each its own
process, for about two seconds of load: the device flow and the HTTP floor
(GET /__lbheartbeat__) in the same run.  No timing is asserted: the figures
only have to be there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "load.py"
FIGURE = r"[0-9][0-9,.]*"


def test_the_load_benchmark_prints_its_figures_for_both_mixes(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("bench/load.py needs a redis-server on PATH")
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--users", "2", "--duration", "1", "--warmup", "0.5",
         "--mix", "upstream,heartbeat", "--log-access", "all", "--json", str(figures)],
        cwd=REPO, capture_output=True, text=True, timeout=90)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"^command: .*bench/load\.py --users 2 --duration 1", out, re.M), out
    assert re.search(r"^\S+ \S+ UTC +\d+ CPUs? .* commit \S+", out, re.M), out

    # A row per level: 2 users, flows per daemon CPU-second and the rest, no error.
    rows = re.findall(rf"^\| 2 \| - \| ({FIGURE}) \| ({FIGURE}) \| ({FIGURE}) \|.* \| (\d+) \|"
                      rf" {FIGURE} \| {FIGURE} \| {FIGURE} \| {FIGURE} \|$", out, re.M)
    assert len(rows) >= 2, out
    assert all(errors == "0" for *_, errors in rows), rows
    assert re.search(r"^### same run, by mix: flows per daemon CPU-second, ratio to device", out,
                     re.M), out
    assert re.search(rf"^\| 2 \| all \| GET /__lbheartbeat__ \| .* \| \*\*{FIGURE}\*\* ", out,
                     re.M), out

    result = json.loads(figures.read_text())
    by_mix = {level["mix"]: level for level in result["levels"]}
    assert set(by_mix) == {"upstream", "heartbeat"}
    for level in by_mix.values():
        assert level["flows"] > 0 and level["flows_per_daemon_cpu_s"] > 0, level
        assert level["errors"] == {} or sum(level["errors"].values()) == 0, level["errors"]
    assert by_mix["upstream"]["daemon_requests_per_flow"] >= 4
    reference = next(r for r in result["comparison"]["rows"]
                     if r["mix"] == "heartbeat" and r["round"] == "all")
    assert reference["ratio"] > 0
