"""bench/flow_floor.py end to end with tiny sizes: it runs and prints its figures.

The real daemon (twistd), a private redis-server, the fake SMSC and the bare
Klein server, each its own process, for a second or so per level.  No
timing is asserted: the figures only have to be there, and every flow has to
complete.
"""

from __future__ import annotations

import json
import re

from conftest import run_bench

FIGURE = r"[0-9][0-9,.]*"


def test_the_flow_floor_benchmark_prints_its_figures(tmp_path):
    figures = tmp_path / "figures.json"
    out = run_bench("flow_floor.py", "--users", "2", "--duration", "1", "--warmup", "0.5",
                    "--rounds", "1", "--klein", "--lean-floor", "--redis-flows", "2", "--json", str(figures),
                    timeout=120)

    assert re.search(r"^command: .*bench/flow_floor\.py --users 2", out, re.M), out
    assert re.search(r"^commit: \S+ \(working tree", out, re.M), out
    assert re.search(r"^machine: .*CPUs", out, re.M), out

    # One row per level, each with flows and no error.
    levels = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1] == "1":
            levels[cells[2]] = cells
    assert set(levels) == {"bare", "bare-resource", "bare-lean", "device-jwt", "device-browserid",
                           "backend"}
    for name, cells in levels.items():
        assert int(cells[3].replace(",", "")) > 0 and cells[4] == "0", cells
    for name in ("device flow, JWT (EdDSA) certificate",
                 "device flow, BrowserID (RSA-2048) certificate", "backend (Verify API)"):
        assert re.search(rf"^{re.escape(name)}: {FIGURE}x the HTTP floor", out, re.M), name
        assert re.search(rf"^{re.escape(name)}: {FIGURE}x the floor without form parsing", out,
                         re.M), name
    assert re.search(rf"^bare Klein route / bare twisted.web Resource, CPU per request: {FIGURE}",
                     out, re.M), out
    assert re.search(rf"^mt/verify -> submit_sm p99 at half load: {FIGURE} ms", out, re.M), out
    for load in ("saturated", "half the saturated flows/s"):
        assert re.search(rf"^device JWT flow, {load}: .*; the daemon on CPU {FIGURE} ms/s, "
                         rf"runnable but waiting for a CPU {FIGURE} ms/s$", out, re.M), out
    # On the wire when this machine can capture the loopback (root and tcpdump), else why not.
    wire = re.search(r"^latency on the wire: (on \(tcpdump -i lo\)|off \((.+)\))$", out, re.M)
    assert wire, out
    if wire.group(1).startswith("on"):
        assert re.search(rf"^mt/verify -> submit_sm p99 at half load, on the wire: {FIGURE} ms",
                         out, re.M), out
        assert re.search(rf"^\| sms/mt/verify \| {FIGURE} \|.* \| {FIGURE} \| {FIGURE} \| "
                         rf"{FIGURE} \| {FIGURE} \|$", out, re.M), out
        assert re.search(r"^\(capture: .* 0 gaps, .* tcpdump dropped 0\)$", out, re.M), out
    else:
        assert wire.group(2) in ("not root (tcpdump needs CAP_NET_RAW)",
                                 "no tcpdump on PATH (apt-get install tcpdump)"), wire.group(2)
    # Redis round trips and commands per flow, for every flow.
    for flow in ("device-jwt", "device-browserid", "backend"):
        assert re.search(rf"^\| {flow} \| {FIGURE} \| {FIGURE} \| .*evalsha", out, re.M), flow

    result = json.loads(figures.read_text())
    assert set(result["ratios"]) == {"device-jwt", "device-browserid", "backend"}
    assert all(r["median"] > 0 for r in result["ratios"].values())
    assert set(result["lean_ratios"]) == set(result["ratios"])
    device = result["rounds"][0]["device-jwt"]
    assert round(device["requests_per_flow"]) == 5
    assert result["latency"]["half"]["flows"] > 0
    if result["latency"]["wire"] == "on":
        for load in ("saturated", "half"):
            figures = result["latency"][load]["wire"]
            # Every flow's mt/verify found its submit_sm, and every endpoint was answered.
            assert figures["accept_submit_ms"]["n"] > 0, figures
            assert figures["accept_submit_ms"]["missing"] == 0, figures
            assert {"register", "sms/mt/verify", "sms/verify_code", "certificate/sign",
                    "unregister"} <= set(figures["answer_ms"]), figures
