"""Message ids as carriers quote them, and how a receipt's id names one submit.

The submit side records the id each C{submit_sm_resp} gave, in
L{normalized<normalize_message_id>} form.  A receipt's id goes through
L{receipt_message_id}, which applies the carrier's declared
C{receipt_id_format} (some SMSCs answer a submit with a hex id and quote it
in decimal in the receipt, or the reverse) and gives the one id to look the
message up under.  There is no guessing: an id that reads as hex and as
decimal (C{10} is 0x10 and ten) names the message of its declared reading
and no other.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from types import MappingProxyType

_DECIMAL = frozenset(string.digits)
_HEX = frozenset(string.digits + "abcdef")
#: Longer ids are never read as numbers (SMPP ids are at most 64 octets).
_MAX_NUMERIC_ID = 64

#: What C{receipt_id_format} may name: how a carrier quotes in its receipts
#: the id its C{submit_sm_resp} gave (see L{receipt_message_id}).
RECEIPT_ID_FORMATS = ("as-is", "hex-to-decimal", "decimal-to-hex")
#: Receipts quote the id as the submit gave it.
DEFAULT_RECEIPT_ID_FORMAT = "as-is"
#: For a format that converts: the digits the receipt's id must be made of,
#: its base, and how the value is written in the submit's form.
_CONVERSIONS: Mapping[str, tuple[frozenset[str], int, str]] = MappingProxyType({
    "hex-to-decimal": (_DECIMAL, 10, "x"),
    "decimal-to-hex": (_HEX, 16, "d"),
})


def normalize_message_id(raw: str) -> str:
    """The canonical form of an SMSC message id.

    NULs are removed, surrounding whitespace stripped, letters lowercased and
    leading zeros dropped (an id of zeros only becomes C{"0"}).
    """
    text = raw.replace("\0", "").strip().lower()
    trimmed = text.lstrip("0")
    return trimmed or ("0" if text else "")


def receipt_message_id(raw: str, receipt_id_format: str) -> str | None:
    """The normalized id of the submit a receipt's id C{raw} names.

    Matching contract: a receipt names exactly one submit, the one whose
    L{normalized<normalize_message_id>} C{submit_sm_resp} id equals what
    this returns.

      - C{"as-is"}: the receipt quotes the id as the submit gave it: the
        normalized C{raw}.
      - C{"hex-to-decimal"}: the submit gave a hex id and the receipt quotes
        its value in decimal: C{raw} is read as decimal and written in
        lowercase hex (C{"6699"} gives C{"1a2b"}).
      - C{"decimal-to-hex"}: the reverse: C{raw} is read as hex and written
        in decimal (C{"1A2B"} gives C{"6699"}).

    Case and leading zeros never matter, on either side.

    @param raw: the id as the receipt gave it (TLV or text).
    @param receipt_id_format: one of L{RECEIPT_ID_FORMATS}.
    @return: the normalized id, or C{None} when C{raw} is blank, or cannot
        be read in the base the format says (letters in a decimal id, an id
        over 64 characters that is to be converted).
    @raise ValueError: a C{receipt_id_format} not in L{RECEIPT_ID_FORMATS}.
    """
    if receipt_id_format not in RECEIPT_ID_FORMATS:
        raise ValueError(f"unknown receipt_id_format {receipt_id_format!r}; "
                         f"known formats are {', '.join(RECEIPT_ID_FORMATS)}")
    normal = normalize_message_id(raw)
    if not normal:
        return None
    conversion = _CONVERSIONS.get(receipt_id_format)
    if conversion is None:
        return normal
    digits, base, written = conversion
    if len(normal) > _MAX_NUMERIC_ID or not set(normal) <= digits:
        return None
    return format(int(normal, base), written)


def message_id_aliases(raw: str) -> frozenset[str]:
    """Every normalized reading of a message id: for display and diagnostics.

    The L{normalized<normalize_message_id>} id; when it reads as hex, the
    decimal form of that value; and when it reads as decimal, the lowercase
    hex form of that value.

    This is no matching rule: two different messages share readings (id
    C{10} read as hex is C{16}, another message's id), so looking a receipt
    up under every reading finds the wrong message.  Match receipts with
    L{receipt_message_id}.

    @return: a non-empty set, unless C{raw} is blank (then C{{""}}).
    """
    normal = normalize_message_id(raw)
    aliases = {normal}
    if normal and len(normal) <= _MAX_NUMERIC_ID:
        chars = set(normal)
        if chars <= _HEX:
            aliases.add(str(int(normal, 16)))
        if chars <= _DECIMAL:
            aliases.add(format(int(normal), "x"))
    return frozenset(aliases)


__all__ = [
    "DEFAULT_RECEIPT_ID_FORMAT", "RECEIPT_ID_FORMATS", "message_id_aliases",
    "normalize_message_id", "receipt_message_id",
]
