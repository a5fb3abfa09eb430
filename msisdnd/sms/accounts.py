"""Carrier accounts whose limits several daemons share: the interfaces, and
their in-memory implementations.

An L{Account} is one SMSC login, (host, port, system_id): every C{[[carrier]]}
table of every daemon that names the same triple shares its C{throughput}
and C{max_binds}.  The carrier side (L{msisdnd.smpp}) asks two sources:

  - an L{IThroughputLeases} for tokens: one C{submit_sm} each, granted in
    small leases that are good until the end of the current time slice of
    L{SLICE} seconds.  Slice C{n} holds L{slice_tokens} tokens for every
    daemon together, so any second (sliding, as the SMSC counts it) holds at
    most C{throughput} plus one slice's tokens: one lease, at most;
  - an L{IBindPermits} for permits: one per simultaneous bind, at most
    C{max_binds} held at once, each a lease its holder renews while it lives.

The implementations here (L{LocalLeases}, L{LocalPermits}) know only this
process: they are what a daemon uses alone, and what the Redis-backed ones in
L{msisdnd.state.accounts} fall back on, with the account's limits divided by
C{daemons} (its local share), while Redis cannot be reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

#: Seconds in one throughput slice: the tokens of a lease are good until the
#: slice ends, and a second holds at most one slice's tokens over the cap.
SLICE = 0.1
_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Account:
    """One SMSC account and the limits every daemon bound to it shares.

    @ivar key: C{"host:port:system_id"} (several accounts joined by C{"+"}
        for a carrier that transmits on more than one).
    @ivar throughput: C{submit_sm} per second across every daemon; 0 for no cap.
    @ivar max_binds: simultaneous binds across every daemon; 0 for no limit.
    @ivar bind_lease: seconds a bind permit lasts unless renewed.
    @ivar daemons: the daemons expected to share the account: without
        Redis, each keeps to C{1/daemons} of its limits.
    """

    key: str
    throughput: float = 0.0
    max_binds: int = 0
    bind_lease: float = 15.0
    daemons: int = 1

    @property
    def local_throughput(self) -> float:
        """This daemon's share of L{throughput}, for when Redis is away."""
        return self.throughput / self.daemons

    @property
    def local_binds(self) -> int:
        """This daemon's share of L{max_binds} (at least one), for when Redis is away."""
        return max(1, self.max_binds // self.daemons)


@dataclass(frozen=True, slots=True)
class Lease:
    """Tokens granted: C{tokens} submits, good for C{ttl} seconds from the
    grant (the rest of slice C{slice}), after which unused ones lapse."""

    tokens: int
    ttl: float
    slice: int


def slice_tokens(rate: float, n: int, slice_seconds: float = SLICE) -> int:
    """The tokens slice C{n} holds at C{rate} per second.

    Slices hand out C{floor(rate * t)} tokens in all by time C{t} (rate in
    thousandths, slices in whole milliseconds, so that the arithmetic is
    exact, here and in Redis's Lua), so any whole second of slices holds at
    most C{ceil(rate)} and a rate below one per slice still gets its token
    now and then.  The Lua twin is in L{msisdnd.state.accounts}.
    """
    per_slice = round(rate * 1000) * round(slice_seconds * 1000)  # in millionths
    carried = (per_slice % _MILLION) * (n % _MILLION) % _MILLION
    return (carried + per_slice) // _MILLION


class IThroughputLeases(Interface):
    """Where a carrier takes its account's throughput tokens from."""

    def take(account: Account, want: int):
        """Up to C{want} tokens of C{account}'s current slice.

        @return: a Deferred firing with a L{Lease} (of 0 tokens when the slice
            is spent: ask again when its C{ttl} has passed); it never fails.
        """

    def giveBack(account: Account, lease: Lease, unused: int) -> None:
        """Return C{unused} tokens of C{lease} (its carrier's binds dropped)."""


class IBindPermits(Interface):
    """Where a bind takes its account's permit to be bound from."""

    def acquire(account: Account, holder: str, lost: Callable[[], None]):
        """Take one of C{account}'s C{max_binds} permits for C{holder} (a
        name unique to one bind of one daemon), or renew the one it holds.

        @param lost: called if the permit is lost later (another daemon took
            it after this one could not renew it in time).
        @return: a Deferred firing with C{True} (held) or C{False} (all taken).
        """

    def release(account: Account, holder: str) -> None:
        """Give C{holder}'s permit back (its session ended)."""


@implementer(IThroughputLeases)
class LocalLeases:
    """Tokens from this process's own slices, at C{1/divisor} of each
    account's throughput (its L{Account.daemons} when C{divisor} is C{None})."""

    def __init__(self, clock: IReactorTime, divisor: int | None = 1,
                 slice_seconds: float = SLICE):
        self.clock = clock
        self.divisor = divisor
        self.slice_seconds = slice_seconds
        self.slice_ms = round(slice_seconds * 1000)
        self._granted: dict[str, tuple[int, int]] = {}  # account -> (slice, granted)

    def _rate(self, account: Account) -> float:
        if self.divisor is None:
            return account.local_throughput
        return account.throughput / self.divisor

    def take(self, account: Account, want: int) -> Deferred:
        now_ms = math.floor(self.clock.seconds() * 1000)
        n = now_ms // self.slice_ms
        current, granted = self._granted.get(account.key, (n, 0))
        if current != n:
            granted = 0
        give = max(0, min(want, slice_tokens(self._rate(account), n, self.slice_seconds)
                          - granted))
        self._granted[account.key] = (n, granted + give)
        return succeed(Lease(give, ((n + 1) * self.slice_ms - now_ms) / 1000, n))

    def giveBack(self, account: Account, lease: Lease, unused: int) -> None:
        current, granted = self._granted.get(account.key, (None, 0))
        if current == lease.slice:
            self._granted[account.key] = (current, max(0, granted - unused))


@implementer(IBindPermits)
class LocalPermits:
    """Permits counted in this process: each account's C{max_binds}, or its
    local share (L{Account.local_binds}) when C{shared} is false."""

    def __init__(self, shared: bool = True):
        self.shared = shared
        self.holders: dict[str, set[str]] = {}

    def acquire(self, account: Account, holder: str, lost: Callable[[], None]) -> Deferred:
        held = self.holders.setdefault(account.key, set())
        limit = account.max_binds if self.shared else account.local_binds
        if holder in held or len(held) < limit:
            held.add(holder)
            return succeed(True)
        return succeed(False)

    def release(self, account: Account, holder: str) -> None:
        self.holders.get(account.key, set()).discard(holder)
