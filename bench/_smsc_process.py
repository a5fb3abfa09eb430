"""The fake SMSC alone in a process, for benchmarks: SMPP on loopback, nothing else.

    python bench/_smsc_process.py PORT

Listens on 127.0.0.1:PORT with L{msisdnd.fakesmsc.smsc.FakeSMSC}, delivery
receipts off, no HTTP side, no logging, until it is killed.  The benchmark
in C{bench/smpp_throughput.py} starts it so that the SMSC's CPU time is not
the ESME's, and reads that CPU time from C{/proc/<pid>/stat}.

It keeps only the last L{KEEP_MESSAGES} accepted messages: trimming the
SMSC's message list costs time proportional to its length on every submit
once it is full, which would charge the SMSC for memory moves a benchmark
does not care about.
"""

from __future__ import annotations

import os
import sys

# Run as a script (bench/ is not a package): make the repository importable, or
# the tree a benchmark exported with --source (MSISDND_BENCH_SOURCE).
sys.path.insert(0, os.environ.get("MSISDND_BENCH_SOURCE")
                or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ServerEndpoint  # noqa: E402

from msisdnd.fakesmsc.smsc import FakeSMSC  # noqa: E402

#: How many accepted messages the SMSC keeps in memory.
KEEP_MESSAGES = 1000


def main(argv: list[str]) -> None:
    """Listen on the port in C{argv[1]} and run the reactor until killed."""
    if len(argv) != 2 or not argv[1].isdigit():
        sys.exit(f"usage: {argv[0]} PORT")
    smsc = FakeSMSC(reactor, receipt_delay=None, max_messages=KEEP_MESSAGES)
    endpoint = TCP4ServerEndpoint(reactor, int(argv[1]), backlog=16, interface="127.0.0.1")
    d = endpoint.listen(smsc.buildFactory())

    def failed(failure):
        sys.stderr.write(f"fake SMSC: cannot listen: {failure.getErrorMessage()}\n")
        reactor.stop()

    d.addErrback(failed)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
