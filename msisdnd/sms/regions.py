"""Which numbers an MCC's traffic is for (ITU E.212 as the C{mobile-codes}
package ships it, and the regions' calling codes as C{phonenumbers} has them).

A send carries the client's MCC only when it is one of the number's region's
(L{msisdnd.verification.networks}), so all of an MCC's traffic goes to
numbers under the calling codes of that MCC's regions.
"""

from __future__ import annotations

from functools import lru_cache

import mobile_codes
import phonenumbers


@lru_cache(maxsize=1024)
def mcc_regions(mcc: str) -> frozenset[str]:
    """The ISO 3166 regions an MCC is assigned to (empty: none)."""
    try:
        return frozenset(country.alpha2 for country in mobile_codes.mcc(mcc))
    except KeyError:
        return frozenset()


@lru_cache(maxsize=1024)
def mcc_calling_codes(mcc: str) -> frozenset[str]:
    """The E.164 calling codes (C{"+33"}) of the MCC's regions (empty: none known)."""
    codes = (phonenumbers.country_code_for_region(region) for region in mcc_regions(mcc))
    return frozenset(f"+{code}" for code in codes if code)
