"""bench/load.py end to end with tiny sizes: it runs, prints its figures, fails no flow.

A private redis-server, the fake SMSC and one daemon (twistd), each its own
process, for about three seconds of load: the device flow and the HTTP floor
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
#: A ratio or a rate over a window where nothing ended (nan) or no CPU tick fell (inf).
RATIO = r"([0-9][0-9,.]*|nan|inf)"


def test_the_load_benchmark_prints_its_figures_for_both_mixes(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("bench/load.py needs a redis-server on PATH")
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--users", "2", "--duration", "2", "--warmup", "1",
         "--mix", "upstream,heartbeat", "--log-access", "all", "--json", str(figures)],
        cwd=REPO, capture_output=True, text=True, timeout=90)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"^command: .*bench/load\.py --users 2 --duration 2", out, re.M), out
    assert re.search(r"^\S+ \S+ UTC +\d+ CPUs? .* commit \S+", out, re.M), out

    # A row per level: 2 users, flows per daemon CPU-second and the rest, no error.
    rows = re.findall(rf"^\| 2 \| - \| {FIGURE} \| {RATIO} \| {FIGURE} \|.* \| (\d+) \|"
                      rf" {FIGURE} \| {FIGURE} \| {FIGURE} \| {FIGURE} \|$", out, re.M)
    assert len(rows) >= 2, out
    assert all(errors == "0" for _, errors in rows), rows
    assert re.search(r"^### same run, by mix: flows per daemon CPU-second, ratio to device", out,
                     re.M), out
    assert re.search(rf"^\| 2 \| all \| GET /__lbheartbeat__ \| .* \| \*\*{RATIO}\*\* ", out,
                     re.M), out

    result = json.loads(figures.read_text())
    by_mix = {level["mix"]: level for level in result["levels"]}
    assert set(by_mix) == {"upstream", "heartbeat"}
    # How many flows end inside a two-second window depends on the machine's
    # load (a device flow takes ~0.3 s idle, seconds on a busy machine): the
    # figures must be there, not any amount.
    for level in by_mix.values():
        assert level["flows"] >= 0 and not level["flows_per_daemon_cpu_s"] < 0, level
        assert level["errors"] == {} or sum(level["errors"].values()) == 0, level["errors"]
    assert by_mix["heartbeat"]["flows"] > 0
    reference = next(r for r in result["comparison"]["rows"]
                     if r["mix"] == "heartbeat" and r["round"] == "all")
    assert not reference["ratio"] < 0   # a number, or nan when the device level had no flow
