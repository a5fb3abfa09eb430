"""Message ids as carriers quote them, in one comparable form.

An SMSC may quote the same message id in hex in its C{submit_sm_resp} and in
decimal in the receipt, with or without leading zeros.  Both sides of a match
(the id recorded at submit time, the id a receipt names) go through
L{message_id_aliases}, and two ids denote the same message when their alias
sets intersect.
"""

from __future__ import annotations

import string

_DECIMAL = frozenset(string.digits)
_HEX = frozenset(string.digits + "abcdef")
#: Longer ids get no numeric aliases (SMPP ids are at most 64 octets).
_MAX_ALIASED_ID = 64


def normalize_message_id(raw: str) -> str:
    """The canonical form of an SMSC message id.

    NULs are removed, surrounding whitespace stripped, letters lowercased and
    leading zeros dropped (an id of zeros only becomes C{"0"}).
    """
    text = raw.replace("\0", "").strip().lower()
    trimmed = text.lstrip("0")
    return trimmed or ("0" if text else "")


def message_id_aliases(raw: str) -> frozenset[str]:
    """Every normalized form in which the same message id may be given.

    SMSCs disagree with themselves about ids: one may give C{1A2B} in the
    C{submit_sm_resp} and C{6699} in the receipt (the same number, in hex
    then in decimal), or drop leading zeros in one place only.  The aliases
    are the L{normalized<normalize_message_id>} id; when it reads as hex,
    the decimal form of that value; and when it reads as decimal, the
    lowercase hex form of that value.

    Matching contract: two ids denote the same message when their alias sets
    intersect.  Record every alias of the submit's id; look a receipt up by
    every alias of its id.

    @return: a non-empty set, unless C{raw} is blank (then C{{""}}).
    """
    normal = normalize_message_id(raw)
    aliases = {normal}
    if normal and len(normal) <= _MAX_ALIASED_ID:
        chars = set(normal)
        if chars <= _HEX:
            aliases.add(str(int(normal, 16)))
        if chars <= _DECIMAL:
            aliases.add(format(int(normal), "x"))
    return frozenset(aliases)
