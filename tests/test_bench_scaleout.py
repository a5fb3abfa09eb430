"""bench/scaleout.py with tiny sizes: one and two daemons on one Redis, figures printed.

Real processes (redis-server, the fake SMSC, three twistd msisdnd daemons in
two clusters) for a few seconds.  No timing is asserted: the figures only
have to be there, and no flow may fail.
"""

from __future__ import annotations

import json
import re

from conftest import run_bench

FIGURE = r"[0-9][0-9,.]*"


def test_the_scaleout_benchmark_prints_its_figures(tmp_path):
    figures = tmp_path / "scaleout.json"
    out = run_bench("scaleout.py", "--daemons", "1,2", "--users-per-daemon", "2",
                    "--duration", "2", "--warmup", "1", "--rounds", "1", "--json", str(figures),
                    timeout=90)

    assert re.search(r"^command: .*bench/scaleout\.py --daemons 1,2", out, re.M), out
    assert re.search(r"^commit: \S+ \(working tree", out, re.M), out
    assert re.search(r"^machine: .*CPUs", out, re.M), out
    assert re.search(r"^2 daemon\(s\): (pinned to cores \[0, 1\]|not pinned)$", out, re.M), out
    # One level row per daemon count, no failed flow.
    for n, users in ((1, 2), (2, 4)):
        assert re.search(rf"^\| {n} \| 1 \| {users} \| {FIGURE} \| .* \| 0 \|$", out, re.M), out
    # The pooled rows: the reference is one daemon itself.
    assert re.search(rf"^\| 1 \| {FIGURE} \| \*\*{FIGURE}\*\* \| \*\*1\.00\*\* \(1\.00\) \|",
                     out, re.M), out
    assert re.search(rf"^2 daemons: {FIGURE} flows per daemon CPU-s, {FIGURE}% of one "
                     rf"daemon's \(target >= 90%: (MET|NOT MET)\)$", out, re.M), out
    assert re.search(rf"^Redis: {FIGURE} ms of CPU and {FIGURE} commands per flow, {FIGURE} "
                     rf"flows and {FIGURE} commands per Redis CPU-s", out, re.M), out
    assert re.search(r"^failed flows: 0$", out, re.M), out

    result = json.loads(figures.read_text())
    assert [(r["daemons"], r["round"]) for r in result["levels"]] == [(1, 1), (2, 1)]
    for level in result["levels"]:
        assert level["flows"] > 0 and level["errors"] == 0, level
        assert len(level["daemon_cpu_pct"]) == level["daemons"]
        assert level["redis_commands_per_flow"] > 0
    assert [r["daemons"] for r in result["summary"]] == [1, 2]
    assert result["summary"][0]["ratio"] == 1.0
    assert result["redis"]["flows_per_redis_cpu_s"] > 0
