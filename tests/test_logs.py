"""The log observer's batching, in memory on a task.Clock, and into a real file."""

from __future__ import annotations

import io
import json

import pytest
from twisted.internet import task
from twisted.logger import LogLevel, Logger, LogPublisher

from msisdnd import logs


class CountingFile(io.StringIO):
    """A text file that counts its writes and flushes."""

    def __init__(self):
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1


class Reactor(task.Clock):
    """A clock that records the system event triggers added to it."""

    def __init__(self):
        super().__init__()
        self.triggers = []

    def addSystemEventTrigger(self, phase, event, call):
        self.triggers.append((phase, event, call))


def logger_to(observer) -> Logger:
    publisher = LogPublisher(observer)
    return Logger(namespace="test", observer=publisher)


def buffered(**kwargs):
    out, clock = CountingFile(), task.Clock()
    observer = logs.BufferedObserver(out, lambda e: e["log_format"] + "\n", clock, **kwargs)
    return out, clock, observer, logger_to(observer)


def test_info_lines_wait_for_the_interval_and_go_out_in_one_write():
    out, clock, _, log = buffered(interval=0.1)
    for i in range(5):
        log.info(f"line {i}")
    assert out.getvalue() == "" and clock.getDelayedCalls()
    clock.advance(0.099)
    assert out.getvalue() == ""
    clock.advance(0.001)
    assert out.getvalue() == "".join(f"line {i}\n" for i in range(5))
    assert (out.writes, out.flushes) == (1, 1)
    assert not clock.getDelayedCalls()


def test_one_wait_per_batch_counted_from_its_first_line():
    out, clock, _, log = buffered(interval=0.1)
    log.info("a")
    clock.advance(0.05)
    log.info("b")
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.05)
    assert out.getvalue() == "a\nb\n"
    log.info("c")
    clock.advance(0.1)
    assert out.getvalue() == "a\nb\nc\n" and out.writes == 2


@pytest.mark.parametrize("level", ["warn", "error", "critical"])
def test_a_warning_or_worse_goes_out_at_once_with_what_was_held(level):
    out, clock, _, log = buffered()
    log.info("before")
    getattr(log, level)("bad")
    assert out.getvalue() == "before\nbad\n" and out.writes == 1
    assert not clock.getDelayedCalls()  # the pending wait is cancelled


def test_the_limit_writes_without_waiting():
    out, clock, _, log = buffered(limit=10)
    log.info("12345")
    assert out.getvalue() == ""
    log.info("67890")
    assert out.getvalue() == "12345\n67890\n"
    assert not clock.getDelayedCalls()


def test_after_stop_every_line_goes_out_as_it_comes():
    out, clock, observer, log = buffered()
    log.info("held")
    observer.stop()
    assert out.getvalue() == "held\n"
    log.info("after the reactor")
    assert out.getvalue() == "held\nafter the reactor\n" and not clock.getDelayedCalls()


def test_an_event_formatted_to_nothing_writes_nothing():
    out, clock = CountingFile(), task.Clock()
    observer = logs.BufferedObserver(out, lambda e: None, clock)
    logger_to(observer).warn("dropped")
    assert (out.getvalue(), out.writes, clock.getDelayedCalls()) == ("", 0, [])


def test_the_configured_observer_writes_json_into_a_file_at_once_for_a_warning(tmp_path,
                                                                             monkeypatch):
    """A real file: info lines are not there yet; a warning is there at once, with them;
    logs.flush() writes out what is held (the daemon calls it before it ends the process)."""
    monkeypatch.setattr(logs, "_chosen", {"format": "json", "level": "info"})
    monkeypatch.setattr(logs, "_observers", [])
    path = tmp_path / "daemon.log"
    clock = Reactor()
    with open(path, "w") as out:
        log = logger_to(logs.observer(out, clock))
        log.debug("filtered out")
        log.info("started {what}", what="x")
        assert path.read_text() == ""
        log.warn("something is wrong")
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert [(r["level"], r["message"]) for r in lines] == [
            ("info", "started x"), ("warn", "something is wrong")]
        log.info("last words")
        logs.flush()
        assert json.loads(path.read_text().splitlines()[-1])["message"] == "last words"
        clock.advance(1)  # nothing held: the cancelled wait writes nothing twice
        assert len(path.read_text().splitlines()) == 3


def test_the_reactor_shutdown_writes_out_and_stops_the_batching(monkeypatch):
    monkeypatch.setattr(logs, "_observers", [])
    reactor = Reactor()
    out = CountingFile()
    log = logger_to(logs.observer(out, reactor))
    log.info("held")
    ((phase, event, stop),) = reactor.triggers
    assert (phase, event) == ("after", "shutdown")
    stop()
    assert out.getvalue().endswith("held\n")
    log.info("direct")
    assert out.getvalue().endswith("direct\n")


def test_where_the_observer_writes_follows_twistds_options(tmp_path, monkeypatch):
    """As twistd would: stdout with --nodaemon, else --logfile or twistd.log;
    nothing of ours with --logger or --syslog."""
    import sys

    monkeypatch.setattr(logs, "_observers", [])
    monkeypatch.chdir(tmp_path)
    clock = Reactor()
    assert logs.for_twistd({"logger": "x.y"}, clock) is None
    assert logs.for_twistd({"syslog": True}, clock) is None
    assert logs.for_twistd({"logfile": "-"}, clock) is None   # twistd refuses that itself
    logs.for_twistd({"nodaemon": True}, clock)
    assert logs._observers[-1].out is sys.stdout
    logs.for_twistd({"nodaemon": True, "logfile": "-"}, clock)
    assert logs._observers[-1].out is sys.stdout
    logs.for_twistd({}, clock)
    assert logs._observers[-1].out.path == str(tmp_path / "twistd.log")
    logs.for_twistd({"logfile": str(tmp_path / "x.log"), "nodaemon": True}, clock)
    assert logs._observers[-1].out.path == str(tmp_path / "x.log")
    for observer in logs._observers[2:]:
        observer.out.close()
