"""The status board's history in memory: what the last minute and the last
hour mean, on a task.Clock, over the verifier's counters."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from twisted.internet.task import Clock

from msisdnd.api.status import HISTORY, SAMPLE_EVERY, StatusBoard
from msisdnd.smpp.service import CarriersService

STARTED = ("verification", "sms/mt", "started")


def _board():
    clock = Clock()
    clock.advance(1000)
    verifier = SimpleNamespace(outcomes=Counter(), mo_handled=0, mo_dropped=0,
                               mcc_mismatches=0, receipt_states=Counter())
    board = StatusBoard(clock, CarriersService([], clock), verifier, SimpleNamespace(errors=0),
                        version="1.0", environment="testing")
    return clock, verifier, board


def test_a_young_daemon_counts_its_window_from_the_start():
    clock, verifier, board = _board()
    board.sample()
    verifier.outcomes["sms/mt", "started"] += 5
    clock.advance(30)
    snapshot = board.take()
    assert board.recent(snapshot, 60)[STARTED] == 5
    assert snapshot.verifications == {("sms/mt", "started"): 5}


def test_the_last_minute_is_measured_from_the_reading_a_minute_ago():
    clock, verifier, board = _board()
    for _ in range(30):  # five minutes, one more verification every sample
        board.sample()
        verifier.outcomes["sms/mt", "started"] += 1
        clock.advance(SAMPLE_EVERY)
    snapshot = board.take()
    assert snapshot.verifications[("sms/mt", "started")] == 30
    assert board.recent(snapshot, 60)[STARTED] == 60 / SAMPLE_EVERY
    assert board.recent(snapshot, 3600)[STARTED] == 30  # younger than an hour: since start


def test_the_history_keeps_about_an_hour():
    clock, verifier, board = _board()
    for _ in range(int(3 * HISTORY / SAMPLE_EVERY)):
        board.sample()
        board.take()  # scrapes between samples add no reading
        verifier.outcomes["sms/mt", "started"] += 1
        clock.advance(SAMPLE_EVERY)
    assert len(board._history) <= HISTORY / SAMPLE_EVERY + 2
    snapshot = board.take()
    assert board.recent(snapshot, 3600)[STARTED] == HISTORY / SAMPLE_EVERY
