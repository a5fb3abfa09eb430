"""Tests for msisdnd.smpp.alphabet: MT encoding and splitting, MO decoding, UDH."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msisdnd.smpp.alphabet import (
    Concat,
    EncodedText,
    TextTooLong,
    decode_text,
    encode_text,
    septet_length,
    split_udh,
)

GSM_EXTENSION = "^{}\\[~]|€\x0c"
EMOJI = "😀🎉👍🏽"


def udh(reference: int, total: int, sequence: int) -> bytes:
    return bytes((5, 0, 3, reference, total, sequence))


def bodies(encoded: EncodedText) -> list[bytes]:
    """The parts without their UDH (checking the UDH says what it should)."""
    if len(encoded.parts) == 1 and encoded.esm_class == 0:
        return list(encoded.parts)
    out = []
    for sequence, part in enumerate(encoded.parts, 1):
        concat, body = split_udh(part)
        assert concat is not None
        assert (concat.total, concat.sequence) == (len(encoded.parts), sequence)
        out.append(body)
    return out


def decoded(encoded: EncodedText) -> str:
    return "".join(decode_text(encoded.data_coding, body) for body in bodies(encoded))


def air_octets(encoded: EncodedText, part: bytes) -> int:
    """What one part costs on the air interface, where GSM-7 is packed."""
    udh_octets = 1 + part[0] if encoded.esm_class & 0x40 else 0
    body = part[udh_octets:]
    if encoded.data_coding == 8:
        return len(part)
    septets = len(body) if encoded.data_coding == 0 else septet_length(body.decode("latin-1"))
    assert septets is not None
    # The UDH is padded to a septet boundary before the text septets start.
    bits = math.ceil(udh_octets * 8 / 7) * 7 + septets * 7
    return math.ceil(bits / 8)


# --- choosing the alphabet ---------------------------------------------------------


def test_gsm_text_is_sent_as_unpacked_gsm7():
    encoded = encode_text("Your code: 123456 @ £5", "gsm7", 1)
    # @ is septet 0x00 and £ is 0x01, not their latin-1 octets.
    assert encoded == EncodedText(0, 0, (b"Your code: 123456 \x00 \x015",))


def test_text_outside_gsm_is_sent_as_ucs2():
    encoded = encode_text("Код 1234", "gsm7", 1)
    assert encoded == EncodedText(8, 0, ("Код 1234".encode("utf-16-be"),))


def test_ucs2_alphabet_is_used_even_for_gsm_text():
    encoded = encode_text("code 42", "ucs2", 1)
    assert encoded == EncodedText(8, 0, ("code 42".encode("utf-16-be"),))


def test_section_sign_is_gsm_and_backtick_is_not():
    assert encode_text("§1", "gsm7", 1) == EncodedText(0, 0, (b"\x5f1",))
    assert septet_length("`") is None
    assert encode_text("`1", "gsm7", 1) == EncodedText(8, 0, ("`1".encode("utf-16-be"),))


def test_escape_character_itself_is_not_gsm():
    # A bare 0x1B would be read as the escape to the extension table.
    assert septet_length("a\x1bb") is None
    assert encode_text("a\x1bb", "gsm7", 1).data_coding == 8


def test_extension_characters_cost_two_septets():
    assert septet_length("€") == 2
    assert septet_length("a[b]") == 6
    assert encode_text("€", "gsm7", 1).parts == (b"\x1be",)


def test_empty_text_is_one_empty_part():
    assert encode_text("", "gsm7", 9) == EncodedText(0, 0, (b"",))
    assert encode_text("", "latin1", 9) == EncodedText(3, 0, (b"",))
    assert encode_text("", "ucs2", 9) == EncodedText(8, 0, (b"",))


def test_unknown_alphabet_is_refused():
    with pytest.raises(ValueError, match="alphabet"):
        encode_text("hi", "utf8", 1)


def test_lone_surrogate_is_refused():
    with pytest.raises(ValueError):
        encode_text("a\ud800", "gsm7", 1)


# --- GSM-7 limits ---------------------------------------------------------------------


def test_160_septets_fit_one_message():
    encoded = encode_text("a" * 160, "gsm7", 7)
    assert encoded == EncodedText(0, 0, (b"a" * 160,))


def test_161_septets_take_two_parts():
    encoded = encode_text("a" * 161, "gsm7", 7)
    assert encoded.esm_class == 0x40
    assert encoded.parts == (udh(7, 2, 1) + b"a" * 153, udh(7, 2, 2) + b"a" * 8)


def test_80_euros_fit_one_message_and_81_do_not():
    assert len(encode_text("€" * 80, "gsm7", 1).parts) == 1
    assert len(encode_text("€" * 80 + "a", "gsm7", 1).parts) == 2


def test_escape_pair_at_the_part_boundary_moves_to_the_next_part():
    encoded = encode_text("a" * 152 + "€" + "b" * 10, "gsm7", 3)
    assert bodies(encoded) == [b"a" * 152, b"\x1be" + b"b" * 10]
    assert decoded(encoded) == "a" * 152 + "€" + "b" * 10


def test_escape_pair_that_fits_stays_in_its_part():
    encoded = encode_text("a" * 151 + "€" + "b" * 10, "gsm7", 3)
    assert bodies(encoded) == [b"a" * 151 + b"\x1be", b"b" * 10]


def test_reference_keeps_its_low_eight_bits():
    encoded = encode_text("a" * 200, "gsm7", 0x1234)
    assert [part[:6] for part in encoded.parts] == [udh(0x34, 2, 1), udh(0x34, 2, 2)]


def test_at_most_255_parts():
    assert len(encode_text("a" * (255 * 153), "gsm7", 1).parts) == 255
    with pytest.raises(TextTooLong):
        encode_text("a" * (255 * 153 + 1), "gsm7", 1)
    assert issubclass(TextTooLong, ValueError)


# --- UCS-2 limits ---------------------------------------------------------------------


def test_70_code_units_fit_one_ucs2_message():
    encoded = encode_text("ж" * 68 + "😀", "gsm7", 1)  # the emoji is 2 units
    assert encoded == EncodedText(8, 0, (("ж" * 68 + "😀").encode("utf-16-be"),))
    assert len(encode_text("ж" * 69 + "😀", "gsm7", 1).parts) == 2


def test_ucs2_parts_hold_67_code_units():
    encoded = encode_text("ж" * 71, "gsm7", 5)
    assert encoded.esm_class == 0x40
    assert [len(body) for body in bodies(encoded)] == [134, 8]


def test_surrogate_pair_at_the_part_boundary_moves_to_the_next_part():
    text = "a" * 66 + "😀" + "b" * 10
    encoded = encode_text(text, "gsm7", 2)
    assert bodies(encoded) == [("a" * 66).encode("utf-16-be"), ("😀" + "b" * 10).encode("utf-16-be")]
    assert decoded(encoded) == text


def test_ucs2_part_cap():
    assert len(encode_text("ж" * (255 * 67), "gsm7", 1).parts) == 255
    with pytest.raises(TextTooLong):
        encode_text("ж" * (255 * 67 + 1), "gsm7", 1)


# --- latin-1 mode ----------------------------------------------------------------------


def test_latin1_mode_sends_latin1_octets_for_gsm_text():
    assert encode_text("café {ok}", "latin1", 1) == EncodedText(3, 0, ("café {ok}".encode("latin-1"),))


def test_latin1_mode_falls_back_to_ucs2_outside_latin1():
    assert encode_text("5€", "latin1", 1).data_coding == 8  # GSM, but not latin-1
    assert encode_text("ΔΣ", "latin1", 1).data_coding == 8
    assert encode_text("`", "latin1", 1).data_coding == 8  # latin-1, but not GSM


def test_latin1_mode_counts_gsm_septets():
    assert encode_text("[" * 80, "latin1", 1) == EncodedText(3, 0, (b"[" * 80,))
    encoded = encode_text("[" * 81, "latin1", 4)
    # 153 septets would end in half of a "[": the first part takes 76 of them.
    assert bodies(encoded) == [b"[" * 76, b"[" * 5]
    assert encoded.parts[0][:6] == udh(4, 2, 1)


# --- decoding --------------------------------------------------------------------------


@pytest.mark.parametrize("data_coding, payload, text", [
    (0, b"\x00\x01\x1be\x5f", "@£€§"),
    (0xF1, b"Hi\x00", "Hi@"),
    (0x11, b"Hi\x00", "Hi@"),
    (1, b"plain", "plain"),
    (3, b"caf\xe9", "café"),
    (8, "Код 😀".encode("utf-16-be"), "Код 😀"),
    (0x19, "Код".encode("utf-16-be"), "Код"),
    (4, b"\xe9\x00", "é\x00"),
    (0xF4, b"\xe9", "é"),
])
def test_decode_text(data_coding, payload, text):
    assert decode_text(data_coding, payload) == text


def test_decode_text_replaces_what_it_cannot_read():
    assert decode_text(8, b"\x00a\x00") == "a\ufffd"
    assert decode_text(8, b"\xd8\x3d\x00a") == "\ufffda"
    assert decode_text(0, b"a\x80") == "a\ufffd"
    assert decode_text(1, b"a\xff") == "a\ufffd"


@given(st.integers(0, 255), st.binary(max_size=300))
def test_decode_text_takes_any_bytes(data_coding, payload):
    text = decode_text(data_coding, payload)
    text.encode("utf-8")  # a proper str: no lone surrogates


# --- UDH -------------------------------------------------------------------------------


def test_split_udh_8bit_reference():
    assert split_udh(udh(0xAB, 3, 2) + b"body") == (Concat(0xAB, 3, 2), b"body")


def test_split_udh_16bit_reference():
    payload = bytes((6, 8, 4, 0x12, 0x34, 2, 1)) + b"body"
    assert split_udh(payload) == (Concat(0x1234, 2, 1), b"body")


def test_split_udh_skips_other_elements():
    ports = bytes((5, 4, 0x0B, 0x84, 0x23, 0xF0))
    payload = bytes((1 + len(ports) + 4,)) + ports + bytes((0, 3, 9, 2, 2)) + b"body"
    assert split_udh(payload) == (Concat(9, 2, 2), b"body")


def test_split_udh_without_concatenation():
    assert split_udh(bytes((3, 0x24, 1, 1)) + b"body") == (None, b"body")


@pytest.mark.parametrize("payload, body", [
    (b"", b""),
    (bytes((9, 0, 3, 1)), bytes((9, 0, 3, 1))),  # UDH longer than the payload
    (bytes((3, 0, 3, 1)) + b"x", b"x"),  # element overruns the UDH
    (bytes((1, 0)) + b"x", b"x"),  # element header cut short
    (udh(1, 0, 0) + b"x", b"x"),  # total 0
    (udh(1, 2, 0) + b"x", b"x"),  # sequence 0
    (udh(1, 2, 3) + b"x", b"x"),  # sequence beyond total
])
def test_split_udh_malformed(payload, body):
    assert split_udh(payload) == (None, body)


@given(st.binary(max_size=300))
def test_split_udh_takes_any_bytes(payload):
    concat, body = split_udh(payload)
    assert payload.endswith(body)
    if concat is not None:
        assert 1 <= concat.sequence <= concat.total


# --- round trip ------------------------------------------------------------------------

GSM_BASIC = bytes(b for b in range(128) if b != 0x1B).decode("gsm03.38")

gsm_texts = st.text(alphabet=st.sampled_from(GSM_BASIC + GSM_EXTENSION), max_size=700)
any_texts = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(GSM_EXTENSION + EMOJI + "@£§`ΔΣé\x1b"),
        st.sampled_from("abc 123"),
    ),
    max_size=700,
)


def check_parts(text: str, encoded: EncodedText, reference: int) -> None:
    """The parts decode back to C{text}, fit in an SMS each, and are full."""
    assert decoded(encoded) == text
    for part in encoded.parts:
        assert air_octets(encoded, part) <= 140
        assert len(part) <= 254  # what short_message can carry
    if len(encoded.parts) == 1:
        assert encoded.esm_class == 0
        return
    assert encoded.esm_class == 0x40
    assert all(part[3] == reference & 0xFF for part in encoded.parts)
    # Greedy: a part is short only by the half pair it could not take.
    full = bodies(encoded)[:-1]
    if encoded.data_coding == 8:
        assert all(len(body) >= 132 for body in full)
    else:
        assert all(septet_length(decode_text(encoded.data_coding, body)) >= 152 for body in full)


@given(st.one_of(gsm_texts, any_texts), st.sampled_from(["gsm7", "latin1", "ucs2"]),
       st.integers(0, 0xFFFF))
def test_round_trip_through_parts(text, alphabet, reference):
    check_parts(text, encode_text(text, alphabet, reference), reference)


@given(st.sampled_from(["gsm7", "latin1"]), st.integers(0, 160), st.sampled_from("^{}\\[~]|"),
       st.integers(1, 6))
def test_escape_pairs_survive_every_boundary(alphabet, count, pair, repeat):
    # Pairs spaced so that, over the parts, they land on many offsets.
    text = ("a" * count + pair) * repeat + "z" * 160
    encoded = encode_text(text, alphabet, 1)
    assert encoded.data_coding == (0 if alphabet == "gsm7" else 3)
    check_parts(text, encoded, 1)


@given(st.integers(0, 70), st.sampled_from(EMOJI), st.integers(1, 6))
def test_surrogate_pairs_survive_every_boundary(count, emoji, repeat):
    text = ("ж" * count + emoji) * repeat + "z" * 70
    check_parts(text, encode_text(text, "gsm7", 1), 1)


@given(st.text(alphabet=st.sampled_from(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCXYZÄÖÑÜ§¿abcxyzäöñüà"
    "^{}\\[~]|€`\x1bé😀ŁЖ"), max_size=200))
def test_table_encoding_agrees_with_the_gsm0338_codec(text):
    """The translate-table fast path gives exactly the gsm0338 codec's septets, and
    refuses exactly what the codec cannot encode (and the bare escape)."""
    from msisdnd.smpp.alphabet import _gsm_septets

    try:
        expected = None if "\x1b" in text else text.encode("gsm03.38")
    except UnicodeEncodeError:
        expected = None
    assert _gsm_septets(text) == expected


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=200))
def test_ascii_text_encodes_as_the_gsm0338_codec_does(text):
    """ASCII text takes a bytes-table path of its own: the same septets as the
    codec, and the same refusals (the backtick, control characters, bare escape)."""
    from msisdnd.smpp.alphabet import _gsm_septets

    try:
        expected = None if "\x1b" in text else text.encode("gsm03.38")
    except UnicodeEncodeError:
        expected = None
    assert _gsm_septets(text) == expected


@given(st.one_of(gsm_texts, any_texts, st.text(alphabet=st.characters(max_codepoint=0x7F))),
       st.sampled_from(["gsm7", "latin1", "ucs2", "ebcdic"]))
def test_single_part_is_what_encode_text_sends_in_one_part(text, alphabet):
    from msisdnd.smpp.alphabet import single_part

    single = single_part(text, alphabet)
    if alphabet != "gsm7":
        assert single is None
        return
    encoded = encode_text(text, alphabet, 0)
    if encoded.data_coding == 0 and len(encoded.parts) == 1:
        assert EncodedText(*single[:1], 0, single[1:]) == encoded
    else:
        assert single is None
