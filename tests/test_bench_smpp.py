"""The SMPP benchmarks (and bench/redis_memory.py) run, with tiny sizes, as subprocesses.

Each script must exit 0 and print its figures, so that a benchmark can
never again break unnoticed (bench/smpp_throughput.py kept calling
C{SMPPBind.whenBound} for nine days after commit 0497254 removed it).  No
timing is asserted: the figures only have to be there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from msisdnd.state.embedded import redis_executable

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
FIGURE = r"[0-9][0-9,.]*"


def run(script: str, *args: str, timeout: float = 120) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_smpp_throughput_prints_every_window():
    out = run("smpp_throughput.py", "--messages", "200", "--warmup", "20", "--windows", "1,10",
              "--json")
    result = json.loads(out)
    assert [r["window"] for r in result["results"]] == [1, 10]
    for r in result["results"]:
        assert r["accepted"] == 200 and r["failed_sends"] == 0, r
        assert r["esme_submit_sm_per_cpu_second"] > 0 and r["smsc_cpu_seconds"] >= 0
    assert result["environment"]["code"]


def test_smpp_throughput_table_with_the_throughput_cap_on():
    out = run("smpp_throughput.py", "--messages", "200", "--warmup", "0", "--windows", "10",
              "--throughput", "100000")
    assert re.search(rf"^\s+10\s+200\s+{FIGURE}\s+{FIGURE}\s+{FIGURE}\s+{FIGURE}\s+{FIGURE}\s+0\s+"
                     rf"{FIGURE}$", out, re.M), out
    assert re.search(r"^code: \S+ \(", out, re.M), out


def test_smpp_bare_compares_msisdnd_with_the_bare_esme(tmp_path):
    figures = tmp_path / "bare.json"
    out = run("smpp_bare.py", "--messages", "300", "--warmup", "20", "--rounds", "2",
              "--windows", "10", "--json", str(figures))
    assert re.search(r"^command: .*bench/smpp_bare\.py --messages 300", out, re.M), out
    assert re.search(r"^commit: \S+ \(working tree", out, re.M), out
    assert re.search(r"^machine: .*CPUs", out, re.M), out
    assert re.search(rf"^window 10: msisdnd / bare = {FIGURE} \(median of 2 rounds", out, re.M), out
    assert re.search(r"^failed submits: 0$", out, re.M), out
    result = json.loads(figures.read_text())
    assert sorted((r["round"], r["contender"]) for r in result["runs"]) == [
        (1, "bare"), (1, "msisdnd"), (2, "bare"), (2, "msisdnd")]
    for r in result["runs"]:
        assert r["accepted"] == 300 and r["failed"] == 0 and r["cpu"] > 0, r
    msisdnd = result["summary"]["10"]["msisdnd"]
    assert len(msisdnd["ratios_to_bare"]) == 2 and msisdnd["median_ratio_to_bare"] > 0


def test_smpp_bare_callgrind_prints_instructions_per_submit(tmp_path):
    """--callgrind: each contender's worker under valgrind at two message counts, one SMSC."""
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        pytest.skip("no valgrind on PATH (.ci/run installs it)")
    figures = tmp_path / "callgrind.json"
    out = run("smpp_bare.py", "--callgrind", "--callgrind-messages", "30,90", "--warmup", "10",
              "--windows", "10", "--json", str(figures), timeout=300)
    assert re.search(r"^settings: callgrind .* 30 and 90 measured submits", out, re.M), out
    for contender in ("bare", "msisdnd"):
        assert re.search(rf"^\| 10 \| {contender} \| {FIGURE} \| {FIGURE} \| {FIGURE} \|", out,
                         re.M), out
    assert re.search(rf"^window 10: bare / msisdnd instructions per submit = {FIGURE} "
                     r"\(callgrind", out, re.M), out
    assert re.search(r"^failed submits: 0$", out, re.M), out
    result = json.loads(figures.read_text())
    assert result["runs"] == []  # --callgrind replaces the timed rounds
    grind = result["callgrind"]
    assert grind["messages"] == [30, 90]
    assert sorted((r["contender"], r["messages"]) for r in grind["runs"]) == [
        ("bare", 30), ("bare", 90), ("msisdnd", 30), ("msisdnd", 90)]
    for r in grind["runs"]:
        assert r["accepted"] == r["messages"] and r["failed"] == 0 and r["instructions"] > 0, r
    per = grind["summary"]["10"]
    assert per["bare"]["instructions_per_submit"] > 0
    assert per["msisdnd"]["instructions_per_submit"] > 0
    assert per["msisdnd"]["ratio_bare_over_contender"] == pytest.approx(
        per["bare"]["instructions_per_submit"] / per["msisdnd"]["instructions_per_submit"])


def test_smpp_bare_callgrind_refuses_bad_message_counts():
    done = subprocess.run([sys.executable, str(BENCH / "smpp_bare.py"), "--callgrind",
                           "--callgrind-messages", "90,30"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "--callgrind-messages: want N1,N2 with 1 <= N1 < N2: '90,30'" in done.stderr


def test_smpp_soak_loses_nothing_and_prints_its_table(tmp_path):
    figures = tmp_path / "soak.json"
    out = run("smpp_soak.py", "--messages", "300", "--cuts", "2", "--throughput", "300",
              "--json", str(figures))
    assert re.search(r"^command: .*bench/smpp_soak\.py --messages 300", out, re.M), out
    for scenario in ("throttle", "nul"):
        assert re.search(rf"^\| {scenario} \| 300 \| 300 \| 0 \| {FIGURE} \(", out, re.M), out
    result = json.loads(figures.read_text())
    rows = {r["scenario"]: r for r in result["scenarios"]}
    assert set(rows) == {"throttle", "nul"}
    for r in rows.values():
        assert (r["messages"], r["delivered"], r["lost"], r["log_failures"]) == (300, 300, 0, 0), r
        assert r["submits_per_message"] >= 1.0 and r["id_mismatches"] == 0
        assert r["duplicated"] <= r["in_doubt"] and r["duplicated_beyond_in_doubt"] == 0, r
    assert rows["throttle"]["carrier_errors"].get("ESME_RTHROTTLED", 0) > 0
    assert rows["nul"]["carrier_errors"].get("id_unterminated", 0) >= 300


def test_smpp_fuzz_finds_no_problem(tmp_path):
    figures = tmp_path / "fuzz.json"
    out = run("smpp_fuzz.py", "--pdus", "3000", "--tcp-pdus", "300", "--json", str(figures))
    assert re.search(rf"^## In memory: 3,0[0-9]{{2}} PDUs in {FIGURE} streams", out, re.M), out
    assert re.search(r"^## Over TCP: 3[0-9]{2} PDUs", out, re.M), out
    assert re.search(r"^crashes: 0; unhandled errors \(log failures/criticals\): 0;", out, re.M), out
    assert re.search(r"^problems: 0$", out, re.M), out
    result = json.loads(figures.read_text())
    assert result["problems"] == 0
    assert result["memory"]["final"]["mt_ok"] and result["memory"]["final"]["mo_ok"]
    assert result["tcp"]["mt_ok"] and result["tcp"]["mo_ok"]
    assert sum(result["memory"]["frames"].values()) > 0


def test_redis_memory_runs_tiny():
    try:
        redis_executable()
    except RuntimeError as e:
        pytest.skip(str(e))
    out = run("redis_memory.py", "--users", "20", "--concurrency", "5", "--json")
    result = json.loads(out)
    kinds = [p["kind"] for p in result["phases"]]
    assert len(kinds) == 2, kinds
    for phase in result["phases"]:
        assert phase["created"] == 20 and phase["failed"] == 0, phase
        assert phase["bytes_per_user"] > 0


def test_the_bare_esme_sends_the_bytes_msisdnd_sends(monkeypatch):
    """smpp_bare.py's hand-packed submit_sm body is msisdnd's own for the benchmark's message."""
    from twisted.internet import task

    from msisdnd.smpp.carrier import Carrier
    from msisdnd.sms.interfaces import OutboundSMS

    monkeypatch.syspath_prepend(str(BENCH))
    import smpp_bare
    import smpp_throughput

    carrier = Carrier(smpp_throughput.carrier_config(2775, 10), task.Clock())
    sms = OutboundSMS(smpp_throughput.DESTINATION, smpp_throughput.TEXT)
    assert carrier._encode(sms) == [smpp_bare.bare_submit_body()]
