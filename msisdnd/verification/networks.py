"""Which mobile network a send is for: the client's word, checked against the number.

A client names an MCC (and perhaps an MNC) with C{/sms/mt/verify}; a
stranger names whatever lets his traffic through.  The budgets and the
pumping guard are keyed by what the server derives from the number itself
(its region); the client's MCC-MNC is used — for routing and the network
budget — only when the MCC is one of the number's region (ITU E.212 as the
C{mobile-codes} package ships it: several MCCs for some countries, e.g.
310-316 for the US).  A mismatch is not refused (a desktop client verifying
someone's phone has no SIM of its own): it is logged and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from msisdnd.numbers import facts
from msisdnd.sms.regions import mcc_regions


def region_of(msisdn: str) -> str:
    """The number's region (C{"001"} for non-geographic numbers)."""
    return facts(msisdn).region


@dataclass(frozen=True, slots=True)
class Network:
    """The MCC-MNC a send may use: the client's when consistent, else none."""

    mcc: str | None
    mnc: str | None
    consistent: bool


def network_for(msisdn: str, mcc: str | None, mnc: str | None) -> Network:
    """The client's C{mcc}/C{mnc} if the MCC belongs to the number's region."""
    if mcc is None:
        return Network(None, None, True)
    if region_of(msisdn) in mcc_regions(mcc):
        return Network(mcc, mnc, True)
    return Network(None, None, False)
