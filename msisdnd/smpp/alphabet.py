"""Text to C{short_message} octets and back: alphabets, segmentation, UDH.

Mobile-terminated text goes out through L{encode_text}, which picks the
alphabet a carrier can take, and splits long text into concatenated parts
that never cut an escape pair (GSM 03.38) or a surrogate pair (UTF-16).
Mobile-originated octets come back through L{split_udh} and L{decode_text},
which accept any bytes at all without raising.

GSM 03.38 text is carried unpacked, one septet per octet, as SMPP's
C{data_coding} 0 means; the SMSC packs it for the air interface.  Limits are
therefore counted in septets, not in C{short_message} octets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

GSM_CODEC: Final = "gsm03.38"
UCS2_CODEC: Final = "utf-16-be"

DATA_CODING_DEFAULT: Final = 0x00
DATA_CODING_IA5: Final = 0x01
DATA_CODING_LATIN1: Final = 0x03
DATA_CODING_UCS2: Final = 0x08

ESM_CLASS_UDHI: Final = 0x40

#: Septets in one GSM-7 message, and in one part of a concatenated one.
GSM_SINGLE: Final = 160
GSM_PART: Final = 153
#: UTF-16 code units in one UCS-2 message, and in one part of a concatenated one.
UCS2_SINGLE: Final = 70
UCS2_PART: Final = 67
MAX_PARTS: Final = 255

ALPHABETS: Final = frozenset({"gsm7", "latin1", "ucs2"})

_ESCAPE: Final = 0x1B
_IEI_CONCAT_8: Final = 0x00
_IEI_CONCAT_16: Final = 0x08


class TextTooLong(ValueError):
    """Text that needs more than L{MAX_PARTS} concatenated parts."""


@dataclass(frozen=True, slots=True)
class EncodedText:
    """Text ready for C{submit_sm}.

    @ivar data_coding: the C{data_coding} field for every part.
    @ivar esm_class: the C{esm_class} field for every part (UDHI when multipart).
    @ivar parts: one complete C{short_message} per part, UDH included.
    """

    data_coding: int
    esm_class: int
    parts: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Concat:
    """Concatenation information from a user data header.

    @ivar reference: the message reference shared by all parts (8 or 16 bits).
    @ivar total: how many parts the message has, at least 1.
    @ivar sequence: this part's number, from 1 to C{total}.
    """

    reference: int
    total: int
    sequence: int


def _septet_table() -> dict[int, str]:
    """Every character the GSM 03.38 codec encodes, mapped to its septets.

    Read off the codec itself (an extension character maps to the escape and
    its code), so that L{_gsm_septets} can encode with one C{str.translate}
    instead of the codec's per-character Python loop.  U+001B is left out: a
    bare 0x1B is read by handsets as the escape, not as a character.
    """
    table: dict[int, str] = {}
    for code in range(0x80):
        if code == _ESCAPE:
            continue
        for raw in (bytes((code,)), bytes((_ESCAPE, code))):
            try:
                char = raw.decode(GSM_CODEC)
            except UnicodeDecodeError:
                continue
            if len(char) == 1 and ord(char) not in table and char.encode(GSM_CODEC) == raw:
                table[ord(char)] = raw.decode("latin-1")
    return table


_SEPTETS: Final = _septet_table()
_GSM_CHARACTERS: Final = frozenset(chr(c) for c in _SEPTETS)
# A bytes.translate table from the ASCII characters that are one septet each
# to their septets, and from every other octet to _NO_SEPTET (no septet is
# over 0x7F): most texts are made of those characters alone, and one
# translation and one search of an int (memchr) say so.
_NO_SEPTET: Final = 0xFF
_ASCII_TO_SEPTETS: Final = bytes(
    ord(_SEPTETS[c]) if c < 0x80 and len(_SEPTETS.get(c, "")) == 1 else _NO_SEPTET
    for c in range(0x100))


def _gsm_septets(text: str) -> bytes | None:
    """The unpacked GSM 03.38 septets for C{text}, or C{None} if it does not fit."""
    if text.isascii():
        septets = text.encode("ascii").translate(_ASCII_TO_SEPTETS)
        if _NO_SEPTET not in septets:  # nothing but one-septet characters
            return septets
    if not _GSM_CHARACTERS.issuperset(text):
        return None
    return text.translate(_SEPTETS).encode("latin-1")


def single_part(text: str, alphabet: str) -> tuple[int, bytes] | None:
    """The C{(data_coding, short_message)} of the one part L{encode_text}
    would send C{text} as, for GSM 03.38 text on a C{"gsm7"} carrier (the
    common case, made cheap); C{None} otherwise (ask L{encode_text})."""
    if alphabet == "gsm7" and len(text) <= GSM_SINGLE:
        if text.isascii():  # _gsm_septets's first step, inline on the hot path
            septets = text.encode("ascii").translate(_ASCII_TO_SEPTETS)
            if _NO_SEPTET not in septets:
                return DATA_CODING_DEFAULT, septets
        septets = _gsm_septets(text)
        if septets is not None and len(septets) <= GSM_SINGLE:
            return DATA_CODING_DEFAULT, septets
    return None


def septet_length(text: str) -> int | None:
    """How many GSM 03.38 septets C{text} costs (extension characters cost two).

    @return: the count, or C{None} when C{text} is not in the GSM 03.38
        default alphabet and its extension table.
    """
    septets = _gsm_septets(text)
    return None if septets is None else len(septets)


def _split_septets(septets: bytes) -> list[bytes]:
    """Cut unpacked septets into parts of at most L{GSM_PART}, keeping escape pairs whole."""
    chunks, start, end = [], 0, len(septets)
    while start < end:
        stop = min(start + GSM_PART, end)
        # Every 0x1B is an escape prefix (no code follows an escape with 0x1B),
        # so a chunk ending in one would strand its second half.
        if stop < end and septets[stop - 1] == _ESCAPE:
            stop -= 1
        chunks.append(septets[start:stop])
        start = stop
    return chunks


def _split_utf16(data: bytes) -> list[bytes]:
    """Cut UTF-16-BE octets into parts of at most L{UCS2_PART} units, keeping surrogate pairs whole."""
    size = UCS2_PART * 2
    chunks, start, end = [], 0, len(data)
    while start < end:
        stop = min(start + size, end)
        if stop < end and 0xD8 <= data[stop - 2] <= 0xDB:  # a high surrogate
            stop -= 2
        chunks.append(data[start:stop])
        start = stop
    return chunks


def _split_latin1(septets: bytes, octets: bytes) -> list[bytes]:
    """Cut latin-1 octets where the GSM septets of the same text are cut.

    Each character is one latin-1 octet and one or two septets; a septet
    chunk holds as many characters as it has septets less its escapes.
    """
    chunks, start = [], 0
    for chunk in _split_septets(septets):
        count = len(chunk) - chunk.count(_ESCAPE)
        chunks.append(octets[start:start + count])
        start += count
    return chunks


def _concatenate(chunks: list[bytes], reference: int, data_coding: int) -> EncodedText:
    if len(chunks) > MAX_PARTS:
        raise TextTooLong(f"text needs {len(chunks)} parts; at most {MAX_PARTS} are allowed")
    total = len(chunks)
    ref = reference & 0xFF
    parts = tuple(
        struct.pack(">BBBBBB", 5, _IEI_CONCAT_8, 3, ref, total, seq) + chunk
        for seq, chunk in enumerate(chunks, 1)
    )
    return EncodedText(data_coding, ESM_CLASS_UDHI, parts)


def _encode_ucs2(text: str, reference: int) -> EncodedText:
    # Every part carries at least one unit, so this much text cannot fit;
    # refuse it before doing work proportional to its size.
    if len(text) > MAX_PARTS * UCS2_PART:
        raise TextTooLong(f"text of {len(text)} characters cannot fit in {MAX_PARTS} parts")
    data = text.encode(UCS2_CODEC)
    if len(data) <= UCS2_SINGLE * 2:
        return EncodedText(DATA_CODING_UCS2, 0, (data,))
    return _concatenate(_split_utf16(data), reference, DATA_CODING_UCS2)


def encode_text(text: str, alphabet: str, reference: int) -> EncodedText:
    """Encode C{text} for C{submit_sm}, split into concatenated parts if long.

    Alphabets, as configured per carrier:
      - C{"gsm7"}: GSM 03.38 (C{data_coding} 0, unpacked) when every
        character is in its default alphabet or extension table, else UCS-2.
      - C{"latin1"}: latin-1 octets (C{data_coding} 3) when every character
        is in both GSM 03.38 and latin-1, else UCS-2; for SMSCs that read
        C{data_coding} 0 as latin-1.  Sizes are counted in GSM septets, since
        that is what the air interface carries.
      - C{"ucs2"}: always UTF-16-BE (C{data_coding} 8).

    A single message holds 160 septets or 70 UTF-16 code units; a longer text
    is cut into parts of at most 153 septets or 67 code units, each prefixed
    with a concatenation UDH (IEI 0x00, 8-bit reference) and sent with UDHI
    set in C{esm_class}.  No part ends inside an escape pair or a surrogate
    pair.  Empty text is one empty part.

    @param text: the text to send.
    @param alphabet: C{"gsm7"}, C{"latin1"} or C{"ucs2"}.
    @param reference: the concatenation reference; only its low 8 bits are
        used.  It should differ between the long messages sent to one number.
    @raise TextTooLong: the text needs more than 255 parts.
    @raise ValueError: an unknown C{alphabet}, or C{text} holding a lone
        surrogate, which no alphabet can carry.
    """
    if alphabet not in ALPHABETS:
        raise ValueError(f"unknown alphabet {alphabet!r}; expected one of {sorted(ALPHABETS)}")
    if alphabet == "ucs2" or len(text) > MAX_PARTS * GSM_PART:
        return _encode_ucs2(text, reference)
    septets = _gsm_septets(text)
    if septets is None:
        return _encode_ucs2(text, reference)
    if alphabet == "gsm7":
        if len(septets) <= GSM_SINGLE:
            return EncodedText(DATA_CODING_DEFAULT, 0, (septets,))
        return _concatenate(_split_septets(septets), reference, DATA_CODING_DEFAULT)
    try:
        octets = text.encode("latin-1")
    except UnicodeEncodeError:
        return _encode_ucs2(text, reference)
    if len(septets) <= GSM_SINGLE:
        return EncodedText(DATA_CODING_LATIN1, 0, (octets,))
    return _concatenate(_split_latin1(septets, octets), reference, DATA_CODING_LATIN1)


def segments(text: str, alphabet: str = "gsm7") -> int:
    """How many SMS parts C{text} takes when a carrier with C{alphabet} sends it.

    @param alphabet: C{"gsm7"}, C{"latin1"} or C{"ucs2"}, as in L{encode_text},
        whose splitting this counts.
    @raise ValueError: an unknown alphabet.
    """
    return len(encode_text(text, alphabet, 0).parts)


def _is_gsm_default(data_coding: int) -> bool:
    if data_coding == DATA_CODING_DEFAULT:
        return True
    # Message class variants whose alphabet bits say "default": 1111 00cc
    # (data coding/message class group) and 0001 00cc (general group,
    # uncompressed, with a class).
    return 0xF0 <= data_coding <= 0xF3 or 0x10 <= data_coding <= 0x13


def _is_ucs2(data_coding: int) -> bool:
    # 0001 10cc: general group, uncompressed, with a class, UCS-2.
    return data_coding == DATA_CODING_UCS2 or 0x18 <= data_coding <= 0x1B


def decode_text(data_coding: int, payload: bytes) -> str:
    """Decode a C{short_message} body (UDH already removed) to text.

    C{data_coding} 0 and the message-class variants whose alphabet bits say
    "default" are unpacked GSM 03.38; 1 is IA5 (ASCII); 3 is latin-1; 8 and
    the class variants whose alphabet bits say UCS-2 are UTF-16-BE; anything
    else is read as latin-1, which maps every octet to some character.

    Never raises: octets that do not decode become U+FFFD, as does a dangling
    half of a UTF-16 code unit.
    """
    if _is_gsm_default(data_coding):
        return payload.decode(GSM_CODEC, "replace")
    if _is_ucs2(data_coding):
        return payload.decode(UCS2_CODEC, "replace")
    if data_coding == DATA_CODING_IA5:
        return payload.decode("ascii", "replace")
    return payload.decode("latin-1")


def split_udh(payload: bytes) -> tuple[Concat | None, bytes]:
    """Split a payload sent with UDHI set into its concatenation info and body.

    The first octet is the UDH length; the information elements follow.  A
    concatenation element (IEI 0x00 with an 8-bit reference, or 0x08 with a
    16-bit one) gives the L{Concat}; when several appear, the last one counts.
    Other elements are skipped.

    Never raises.  A UDH longer than the payload gives C{(None, payload)};
    elements that overrun the UDH, or concatenation info with a total of 0 or
    a sequence number outside 1..total, give C{None} with the body after the
    UDH.

    @return: C{(concat, body)}; C{concat} is C{None} when there is no usable
        concatenation element.
    """
    if not payload:
        return None, payload
    end = 1 + payload[0]
    if end > len(payload):
        return None, payload
    header, body = payload[1:end], payload[end:]
    concat: Concat | None = None
    pos = 0
    while pos < len(header):
        if pos + 2 > len(header):
            return None, body
        iei, length = header[pos], header[pos + 1]
        value = header[pos + 2:pos + 2 + length]
        if len(value) != length:
            return None, body
        if iei == _IEI_CONCAT_8 and length == 3:
            concat = Concat(*value)
        elif iei == _IEI_CONCAT_16 and length == 4:
            concat = Concat(*struct.unpack(">HBB", value))
        pos += 2 + length
    if concat is not None and not 1 <= concat.sequence <= concat.total:
        return None, body
    return concat, body


__all__ = [
    "ALPHABETS", "Concat", "EncodedText", "TextTooLong", "decode_text",
    "encode_text", "segments", "septet_length", "split_udh",
]
