"""What the gateway needs to know of a valid E.164 number, worked out once.

phonenumbers takes a tenth of a millisecond to parse a number and find its
region, and one send asks about the same number several times (the type and
country limits, the send budgets, the check of the client's MCC).  L{facts}
works them out once per number and keeps the last few hundred numbers' facts
in this process's memory (never written anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

_TYPE_NAMES = {v: k for k, v in vars(phonenumbers.PhoneNumberType).items() if k.isupper()}
#: Every kind L{facts} may name (C{[limits] number_types} is checked against them).
KINDS = frozenset(_TYPE_NAMES.values())


@dataclass(frozen=True, slots=True)
class NumberFacts:
    """@ivar region: ISO 3166 region; C{"001"} for non-geographic numbers,
        C{""} when none is known.
    @ivar country_code: the calling code, e.g. C{44}.
    @ivar kind: the L{phonenumbers.PhoneNumberType} name, e.g. C{"MOBILE"};
        C{"UNKNOWN"} when phonenumbers cannot tell.
    """

    region: str
    country_code: int
    kind: str


@lru_cache(maxsize=256)
def facts(e164: str) -> NumberFacts:
    """The facts of C{e164}, a number already validated.

    @raise phonenumbers.NumberParseException: C{e164} does not parse.
    """
    number = phonenumbers.parse(e164, None)
    return NumberFacts(phonenumbers.region_code_for_number(number) or "", number.country_code,
                       _TYPE_NAMES.get(phonenumbers.number_type(number), "UNKNOWN"))
