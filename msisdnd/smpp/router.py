"""Choose the carrier for each MT, and fail over when one is down."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from zope.interface import implementer

from msisdnd.sms.interfaces import ISMSSender, NoRouteError, OutboundSMS, QueueFullError
from msisdnd.sms.regions import mcc_calling_codes
from msisdnd.smpp.carrier import Carrier

#: Route rankings kept (L{Router.candidates}); the cache starts over when full.
ROUTES_CACHED = 4096


@implementer(ISMSSender)
class Router:
    """The L{ISMSSender} over every configured carrier.

    Carriers are ranked for a message by: MCC+MNC match, then MCC match, then
    the longest matching destination prefix, then the default carrier, with
    the carrier the message should avoid moved last.  That ranking is a
    function of the configuration and of the message's C{carrier}, C{mcc},
    C{mnc}, C{avoid} and destination prefix (as long as the longest configured
    prefix) alone: it is kept per such key until the carriers change
    (L{use}).  The message goes to the
    first ranked carrier that has a live transmitting bind and room in its
    queue, or failing that to one whose binds are reconnecting (within its
    C{reconnect_grace}).  A message with C{carrier} set goes to that
    carrier only (an MO's answer returns the way it came).

    A message that goes to another carrier than its first choice is a
    failover, counted in C{failovers} by (first choice, carrier taken).  When
    the first choice has no live bind, one warning says that its traffic
    fails over, and one line says when a message goes to it again.
    """

    log = Logger()

    def __init__(self, carriers: Sequence[Carrier]):
        self.failovers: Counter[tuple[str, str]] = Counter()
        self._away: dict[str, float] = {}  # first choice -> when its traffic left it
        self.use(carriers)

    def use(self, carriers: Sequence[Carrier]) -> None:
        """Route over C{carriers} from now on (a reload changed them)."""
        self.carriers = tuple(c for c in carriers if c.config.can_transmit)
        self._by_name = {c.name: c for c in self.carriers}
        self._by_prefix = sorted(
            ((p, c) for c in self.carriers for p in c.config.prefixes),
            key=lambda pair: -len(pair[0]),
        )
        self._defaults = [c for c in self.carriers if c.config.default]
        self._prefix_length = max((len(p) for p, _ in self._by_prefix), default=0)
        self._routes: dict[tuple, tuple[Carrier, ...]] = {}
        for carrier in self.carriers:
            carrier.reroute = self.send

    def candidates(self, sms: OutboundSMS) -> list[Carrier]:
        """The carriers that may take C{sms}, best first."""
        key = (sms.destination[:self._prefix_length], sms.mcc, sms.mnc, sms.carrier, sms.avoid)
        ranked = self._routes.get(key)
        return list(self._keep(key, sms) if ranked is None else ranked)

    def _keep(self, key: tuple, sms: OutboundSMS) -> tuple[Carrier, ...]:
        """Rank C{sms}'s carriers, and keep the ranking under C{key}."""
        ranked = tuple(self._rank(sms))
        if len(self._routes) >= ROUTES_CACHED:
            self._routes.clear()
        self._routes[key] = ranked
        return ranked

    def _rank(self, sms: OutboundSMS) -> list[Carrier]:
        if sms.carrier is not None:
            carrier = self._by_name.get(sms.carrier)
            return [carrier] if carrier is not None else []
        ranked: list[Carrier] = []

        def add(carrier: Carrier) -> None:
            if carrier not in ranked:
                ranked.append(carrier)

        if sms.mcc and sms.mnc:
            for c in self.carriers:
                if sms.mcc + sms.mnc in c.config.mccmnc:
                    add(c)
        if sms.mcc:
            for c in self.carriers:
                if sms.mcc in c.config.mcc:
                    add(c)
        for prefix, c in self._by_prefix:
            if sms.destination.startswith(prefix):
                add(c)
        for c in self._defaults:
            add(c)
        if sms.avoid is not None:
            ranked.sort(key=lambda c: c.name == sms.avoid)
        return ranked

    def send(self, sms: OutboundSMS, timeout: float | None = None) -> Deferred:
        """Send through the best carrier that takes it.  A carrier whose binds
        stay down past its grace hands its stranded messages back
        (C{Carrier.reroute}), and they go to the next one with the time
        they have left."""
        key = (sms.destination[:self._prefix_length], sms.mcc, sms.mnc, sms.carrier, sms.avoid)
        candidates = self._routes.get(key)
        if candidates is None:
            candidates = self._keep(key, sms)
        if not candidates:
            return fail(NoRouteError("no carrier serves this destination"))
        first = candidates[0]
        if len(candidates) > 1:
            # A carrier that is bound before one that is reconnecting (within its grace).
            for carrier in candidates:
                if not carrier.bound:
                    candidates = sorted(candidates, key=lambda c: not c.bound)
                    break
        for carrier in candidates:
            d = carrier.offer(sms, timeout)
            if d is not None:  # else unavailable, or no room for every part: the next one
                if carrier is not first or self._away:
                    self._taken(first, carrier)
                return d
        if any(c.available for c in candidates):
            return fail(QueueFullError("every eligible carrier's queue is full"))
        return fail(NoRouteError("no eligible carrier has a live bind"))

    def _taken(self, first: Carrier, carrier: Carrier) -> None:
        """A message whose first choice was C{first} went to C{carrier}."""
        if carrier is not first:
            self.failovers[first.name, carrier.name] += 1
            if not first.bound and first.name not in self._away:
                self._away[first.name] = first.clock.seconds()
                self.log.warn("Traffic for carrier {carrier} fails over to {to}: {carrier} is "
                              "{state}", carrier=first.name, to=carrier.name,
                              state=first.link.state.value)
        elif self._away:
            left = self._away.pop(carrier.name, None)
            if left is not None:
                self.log.warn("Traffic returns to carrier {carrier} after {seconds:.1f} s",
                              carrier=carrier.name, seconds=carrier.clock.seconds() - left)

    def available(self) -> bool:
        return any(c.available for c in self.carriers)

    def unserved(self) -> list[str]:
        """The configured destinations whose traffic no available carrier
        would take now: C{"mccmnc:20801"}, C{"mcc:208"}, C{"prefix:+33"},
        C{"default"}.

        As L{candidates} ranks them, a destination's traffic may go to a
        default carrier, to a carrier whose prefix is a prefix of it (of
        every calling code of an MCC's regions, for an MCC: a send carries
        the client's MCC only when it is the number's region's), and for an
        MCC-MNC to a carrier naming its MCC: it is served while one of those,
        or a carrier naming it, is available.
        """
        live = [c for c in self.carriers if c.available]
        fallback = any(c in live for c in self._defaults)

        prefixes = tuple(p for c in live for p in c.config.prefixes)

        def covered(numbers: frozenset[str]) -> bool:
            return bool(numbers) and all(n.startswith(prefixes) for n in numbers)

        def mcc_served(mcc: str) -> bool:
            return (any(mcc in c.config.mcc for c in live)
                    or covered(mcc_calling_codes(mcc)))

        unserved = []
        for kind, named, served in (
                ("mccmnc", lambda c: c.config.mccmnc,
                 lambda d: any(d in c.config.mccmnc for c in live) or mcc_served(d[:3])),
                ("mcc", lambda c: c.config.mcc, mcc_served),
                ("prefix", lambda c: c.config.prefixes, lambda d: covered(frozenset([d])))):
            destinations = {d for c in self.carriers for d in named(c)}
            unserved += [f"{kind}:{d}" for d in sorted(destinations)
                         if not (fallback or served(d))]
        if self._defaults and not fallback:
            unserved.append("default")
        return unserved
