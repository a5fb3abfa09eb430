"""bench/webhooks.py end to end with tiny sizes: it runs, prints its figures, loses nothing.

The real daemon (twistd), a private redis-server, the receiver and the
reference client, each its own process, for a second or two.  No timing is
asserted: the figures only have to be there.
"""

from __future__ import annotations

import json
import re

from conftest import run_bench

EVENTS = 100
FIGURE = r"([0-9][0-9,.]*|n/a)"


def test_the_webhooks_benchmark_prints_its_figures_and_loses_nothing(tmp_path):
    figures = tmp_path / "figures.json"
    out = run_bench("webhooks.py", "--events", str(EVENTS), "--rounds", "1", "--warmup", "0",
                    "--stall", "10", "--json", str(figures), timeout=30)

    # Where and what it ran.
    assert re.search(r"^command: .*bench/webhooks\.py --events 100 --rounds 1", out, re.M)
    assert re.search(r"^commit: \S+ \(working tree", out, re.M)
    assert re.search(r"^machine: .*CPUs", out, re.M)

    # One row per side, every event delivered, and the figures.
    rows = [line for line in out.splitlines() if line.startswith("| 1 |")]
    assert [row.split("|")[3].strip() for row in rows] == ["daemon", "reference (treq)"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")]
        assert cells[4:8] == [str(EVENTS), str(EVENTS), "0", "0"], row
    for label in ("deliveries per daemon CPU-second (median)",
                  "daemon CPU ms per delivery (median)",
                  "deliveries per reference CPU-second (median)",
                  "daemon / reference (median of the rounds' ratios)"):
        assert re.search(rf"^{re.escape(label)}: {FIGURE}", out, re.M), label
    assert re.search(r"^lost: 0, duplicates: 0$", out, re.M)
    assert re.search(r"^daemon counters .*delivered 100, failed 0", out, re.M)
    # msisdnd webhooks status: nothing pending, retrying, unread or dead.
    assert re.search(r"^\s+bench\s+0\s+0\s+0\s+0\s", out, re.M)

    result = json.loads(figures.read_text())
    [round_] = result["rounds"]
    for side in ("daemon", "reference"):
        assert round_[side]["delivered"] == EVENTS and round_[side]["lost"] == 0
        assert round_[side]["sample"]["ok"], round_[side]["sample"]
    assert result["summary"]["lost"] == 0 and result["problems"] == []
