"""What C{/discover} answers: which verification methods a network gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True, slots=True)
class Route:
    """The numbers one carrier shows devices."""

    mt_sender: str
    mo_verifier: str | None


class CarrierRoutes(Protocol):
    """What discovery reads of a carrier's configuration."""

    can_transmit: bool
    mt_sender: str
    mo_verifier: str | None
    mccmnc: Sequence[str]
    mcc: Sequence[str]
    default: bool


def _shown(address: str) -> str:
    return "+" + address.lstrip("+") if address.lstrip("+").isdigit() else address


class Discovery:
    """Looks up C{mtSender} and C{moVerifier} by MCC+MNC, then MCC, then the default."""

    def __init__(self, carriers: Sequence[CarrierRoutes], mt_url: str):
        self.mt_url = mt_url
        self.use(carriers)

    def use(self, carriers: Sequence[CarrierRoutes]) -> None:
        """Answer from C{carriers} from now on (a reload changed them)."""
        self._by_mccmnc: dict[str, Route] = {}
        self._by_mcc: dict[str, Route] = {}
        self._default: Route | None = None
        for c in carriers:
            if not c.can_transmit:
                continue
            route = Route(_shown(c.mt_sender) if c.mt_sender else "",
                          _shown(c.mo_verifier) if c.mo_verifier else None)
            for code in c.mccmnc:
                self._by_mccmnc.setdefault(code, route)
            for code in c.mcc:
                self._by_mcc.setdefault(code, route)
            if c.default and self._default is None:
                self._default = route

    def route(self, mcc: str, mnc: str | None) -> Route | None:
        if mnc and mcc + mnc in self._by_mccmnc:
            return self._by_mccmnc[mcc + mnc]
        return self._by_mcc.get(mcc, self._default)

    def discover(self, mcc: str, mnc: str | None, has_msisdn: bool) -> dict:
        """The C{/discover} body, with upstream's method order."""
        route = self.route(mcc, mnc)
        if route is None:
            return {"verificationMethods": [], "verificationDetails": {}}
        methods, details = [], {}
        if has_msisdn or route.mo_verifier is None:
            methods.append("sms/mt")
            details["sms/mt"] = {"mtSender": route.mt_sender, "url": self.mt_url}
        if route.mo_verifier is not None:
            methods.append("sms/momt")
            details["sms/momt"] = {"mtSender": route.mt_sender, "moVerifier": route.mo_verifier}
        return {"verificationMethods": methods, "verificationDetails": details}
