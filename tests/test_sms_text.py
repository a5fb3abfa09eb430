"""Tests for msisdnd.verification.texts (SMS texts) and msisdnd.locale.compile (catalogs)."""

from __future__ import annotations

import gettext
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo

from msisdnd.locale.compile import POError, compile_po, main, po_files
from msisdnd.smpp.alphabet import DATA_CODING_DEFAULT, encode_text, segments
from msisdnd.verification.texts import LOCALES_DIR, SHORT_CODE_MSGID, SMSTexts

#: The encoding each shipped locale's short-code text ends up in with a
#: "gsm7" carrier.  Every locale must be listed, so adding one means deciding
#: (and documenting here) what it costs:
#:   en: GSM-7, fr: GSM-7, es: GSM-7 (no locale needs UCS-2 at present).
ENCODINGS = {"en": DATA_CODING_DEFAULT, "fr": DATA_CODING_DEFAULT, "es": DATA_CODING_DEFAULT}

CODE = "123456"
HOST = "verify.example.com"
APP_HASH = "FA+9qCX9VSu"
SHIPPED = sorted(path.parent.parent.name for path in po_files(LOCALES_DIR))


@pytest.fixture(scope="module")
def texts() -> SMSTexts:
    return SMSTexts()


@pytest.fixture(scope="module")
def full() -> SMSTexts:
    return SMSTexts(webotp_host=HOST)


def test_shipped_locales() -> None:
    assert {"en", "fr", "es"} <= set(SHIPPED)
    assert SMSTexts().locales == tuple(SHIPPED)
    assert set(ENCODINGS) == set(SHIPPED), "declare the encoding of every locale in ENCODINGS"


# Segments -------------------------------------------------------------------


@pytest.mark.parametrize("locale", SHIPPED)
def test_base_text_is_one_segment_in_its_encoding(texts: SMSTexts, locale: str) -> None:
    text = texts.short_code_text(CODE, locale)
    encoded = encode_text(text, "gsm7", 0)
    assert encoded.data_coding == ENCODINGS[locale]
    assert len(encoded.parts) == 1
    assert segments(text) == 1


@pytest.mark.parametrize("alphabet", ["gsm7", "latin1", "ucs2"])
@pytest.mark.parametrize("locale", SHIPPED)
def test_any_alphabet_base_one_segment_full_at_most_two(locale: str, alphabet: str) -> None:
    plain = SMSTexts()
    assert segments(plain.short_code_text(CODE, locale), alphabet) == 1
    full = SMSTexts(webotp_host=HOST)
    assert segments(full.short_code_text(CODE, locale, app_hash=APP_HASH), alphabet) <= 2


@pytest.mark.parametrize("alphabet", ["gsm7", "latin1"])
@pytest.mark.parametrize("locale", SHIPPED)
def test_sms_retriever_limit(full: SMSTexts, locale: str, alphabet: str) -> None:
    # SMS Retriever takes at most 140 bytes: one SMS's user data, so with a
    # GSM-7 or latin-1 carrier the text with both optional lines must not split.
    text = full.short_code_text(CODE, locale, app_hash=APP_HASH)
    assert segments(text, alphabet) == 1


def test_segments_counts_parts() -> None:
    assert segments("a" * 160) == 1
    assert segments("a" * 161) == 2
    assert segments("é" * 71, "ucs2") == 2
    assert segments("ó" * 70) == 1  # UCS-2 fallback: 70 units fit one part
    assert segments("ó" * 71) == 2


# Optional lines --------------------------------------------------------------


@pytest.mark.parametrize("locale", SHIPPED)
def test_webotp_line_is_last(full: SMSTexts, locale: str) -> None:
    for app_hash in (None, APP_HASH):
        lines = full.short_code_text(CODE, locale, app_hash=app_hash).split("\n")
        assert lines[-1] == f"@{HOST} #{CODE}"
        assert lines.count(f"@{HOST} #{CODE}") == 1


def test_full_text_layout(full: SMSTexts) -> None:
    assert full.short_code_text(CODE, "en", app_hash=APP_HASH) == (
        f"Your verification code is: {CODE}\n{APP_HASH}\n@{HOST} #{CODE}")


def test_app_hash_line_without_webotp(texts: SMSTexts) -> None:
    text = texts.short_code_text(CODE, "fr", app_hash=APP_HASH)
    assert text.split("\n") == [f"Votre code de vérification est : {CODE}", APP_HASH]
    assert "@" not in text


def test_no_optional_lines_by_default(texts: SMSTexts) -> None:
    assert texts.short_code_text(CODE, "en") == f"Your verification code is: {CODE}"


def test_webotp_host_is_lowercased_and_validated() -> None:
    assert SMSTexts(webotp_host="Verify.Example.COM").webotp_host == "verify.example.com"
    for bad in ["", "https://example.com", "example.com:443", "exa mple.com", "-a.com",
                "a..com", "ex\nample.com", "bücher.example", "a" * 64 + ".com"]:
        with pytest.raises(ValueError):
            SMSTexts(webotp_host=bad)


@pytest.mark.parametrize("bad", [
    "", "FA+9qCX9VS", "FA+9qCX9VSuu", "FA+9qCX9VS=", "FA-9qCX9VSu", "FA 9qCX9VSu",
    "FA+9qCX9VS\n", "FA+9qCX9VSü"])
def test_app_hash_validation(full: SMSTexts, bad: str) -> None:
    with pytest.raises(ValueError):
        full.short_code_text(CODE, "en", app_hash=bad)


@pytest.mark.parametrize("good", ["FA+9qCX9VSu", "abcdefghijk", "0123456789/"])
def test_app_hash_accepted(texts: SMSTexts, good: str) -> None:
    assert texts.short_code_text(CODE, "en", app_hash=good).endswith("\n" + good)


@pytest.mark.parametrize("bad", ["", "12 34", "1234\n@evil.example #1", "١٢٣٤٥٦"])
def test_code_validation(full: SMSTexts, bad: str) -> None:
    with pytest.raises(ValueError):
        full.short_code_text(bad, "en")


# Locales and long codes ------------------------------------------------------


def test_short_code_text_is_localized(texts: SMSTexts) -> None:
    assert texts.short_code_text(CODE, "fr") == f"Votre code de vérification est : {CODE}"
    assert texts.short_code_text(CODE, "es") == f"Clave para verificar tu teléfono: {CODE}"


def test_short_code_text_locale_fallback(texts: SMSTexts) -> None:
    assert texts.short_code_text(CODE, "fr-CA") == texts.short_code_text(CODE, "fr")
    assert texts.short_code_text(CODE, "ES") == texts.short_code_text(CODE, "es")
    assert texts.short_code_text(CODE, "de") == texts.short_code_text(CODE, "en")
    assert SMSTexts(default_locale="fr").short_code_text(CODE, "xx") == (
        texts.short_code_text(CODE, "fr"))


def test_long_code_text_is_bare_code(full: SMSTexts) -> None:
    long_code = "0123456789abcdef0123456789abcdef"
    assert full.long_code_text(long_code) == long_code
    assert SMSTexts(default_locale="fr").long_code_text(long_code) == long_code


def test_constructor_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="default locale"):
        SMSTexts(default_locale="de")
    with pytest.raises(ValueError, match="alphabet"):
        segments("code", "utf8")
    with pytest.raises(ValueError, match="default locale"):
        SMSTexts(locales_dir=tmp_path)


@pytest.mark.parametrize("msgstr", ["Code: {}", "Code: {kode}", "Code: {code", "Code", "{{code}}"])
def test_broken_catalog_refused_at_load(tmp_path: Path, msgstr: str) -> None:
    target = tmp_path / "en" / "LC_MESSAGES" / "msisdnd.mo"
    target.parent.mkdir(parents=True)
    catalog = Catalog(locale="en")  # written directly: compile_po would refuse these
    catalog.add(SHORT_CODE_MSGID, msgstr)
    with target.open("wb") as mo:
        write_mo(mo, catalog)
    with pytest.raises(ValueError, match="short-code text"):
        SMSTexts(locales_dir=tmp_path)


# Negotiation -----------------------------------------------------------------


@pytest.mark.parametrize("header, expected", [
    ("fr-FR,fr;q=0.9,en;q=0.8", "fr"),
    ("es-ES", "es"),
    ("de", "en"),
    ("*", "en"),
    ("en;q=0, fr;q=0.5", "fr"),
    ("en;q=0, *", "es"),  # "*" but not en: the first other available locale
    ("de-DE, es;q=0.1", "es"),
    ("en;q=0.5, fr;q=0.7, es;q=0.6", "fr"),
    ("es, fr", "es"),  # equal weights: header order
    ("FR-ca", "fr"),
    ("zh-Hant-TW, fr-CA-x-foo;q=0.2", "fr"),
    ("fr;q=1.0", "fr"),
    ("fr; Q=0.5 ;level=1", "fr"),
    ("fr;q=0", "en"),
    ("fr;q=2, es", "es"),  # an invalid q-value drops the item
    ("fr;q=abc", "en"),
    ("fr;q=0.0001", "en"),
    ("fr, fr;q=0", "fr"),  # a repeated range keeps its first weight
    ("fr-CA, fr;q=0", "en"),  # fr refused outright
    ("", "en"),
    (",,;;,", "en"),
    ("\x00\xff garbage ☃", "en"),
    ("fr_FR", "en"),
    ("q=0.5", "en"),
])
def test_negotiate(texts: SMSTexts, header: str, expected: str) -> None:
    assert texts.negotiate(header) == expected


def test_negotiate_missing_header(texts: SMSTexts) -> None:
    assert texts.negotiate(None) == "en"
    assert SMSTexts(default_locale="es").negotiate(None) == "es"
    assert SMSTexts(default_locale="es").negotiate("*") == "es"
    assert SMSTexts(default_locale="es").negotiate("de") == "es"


def test_negotiate_never_raises_on_wrong_type(texts: SMSTexts) -> None:
    assert texts.negotiate(b"fr") == "en"  # type: ignore[arg-type]


def test_negotiate_reads_only_256_characters(texts: SMSTexts) -> None:
    padding = "de;q=0.9, " * 30  # 300 characters of unavailable languages
    assert texts.negotiate("fr, " + padding) == "fr"
    assert texts.negotiate(padding + "fr") == "en"
    # The item cut at character 256 is dropped, not read as a shorter tag.
    cut = "x" * 250 + ",fr-CA"
    assert len(cut) == 256
    assert texts.negotiate(cut) == "fr"
    assert texts.negotiate(cut + "X") == "en"


def test_negotiate_huge_header(texts: SMSTexts) -> None:
    assert texts.negotiate("fr;q=0.5," + "a" * 10_000) == "fr"
    assert texts.negotiate("a" * 10_240) == "en"
    assert texts.negotiate("es," * 4_000) == "es"


# Catalogs ----------------------------------------------------------------------


@pytest.mark.parametrize("po", po_files(LOCALES_DIR), ids=lambda p: p.parent.parent.name)
def test_mo_in_sync_with_po(po: Path) -> None:
    mo = po.with_suffix(".mo")
    assert mo.is_file(), f"run python -m msisdnd.locale.compile to create {mo}"
    assert compile_po(po) == mo.read_bytes(), f"{mo} is stale: run python -m msisdnd.locale.compile"


@pytest.mark.parametrize("po", po_files(LOCALES_DIR), ids=lambda p: p.parent.parent.name)
def test_catalog_passes_gnu_msgfmt_check(po: Path, tmp_path: Path) -> None:
    # GNU msgfmt's --check is stricter than Babel's parser (it also refuses
    # duplicate msgids and unterminated strings); its .mo must read like ours.
    msgfmt = shutil.which("msgfmt")
    if msgfmt is None:
        pytest.skip("GNU msgfmt is not installed")
    out = tmp_path / "gnu.mo"
    subprocess.run([msgfmt, "--check", "-o", str(out), str(po)], check=True, capture_output=True)
    ours = gettext.GNUTranslations(io.BytesIO(compile_po(po)))
    gnu = gettext.GNUTranslations(io.BytesIO(out.read_bytes()))
    assert ours.info() == gnu.info()
    assert ours.gettext(SHORT_CODE_MSGID) == gnu.gettext(SHORT_CODE_MSGID)


@pytest.mark.parametrize("locale, expected", [
    ("en", "Your verification code is: {code}"),
    ("fr", "Votre code de vérification est : {code}"),
    ("es", "Clave para verificar tu teléfono: {code}"),
])
def test_translations_load_via_gettext(locale: str, expected: str) -> None:
    translation = gettext.translation("msisdnd", localedir=LOCALES_DIR, languages=[locale])
    assert isinstance(translation, gettext.GNUTranslations)
    assert translation.gettext(SHORT_CODE_MSGID) == expected
    assert translation.info()["language"] == locale
    assert translation.charset().lower() == "utf-8"


class _Untranslated(gettext.NullTranslations):
    """A fallback that makes a missing translation visible."""

    def gettext(self, message: str) -> str:
        return "<untranslated>"


@pytest.mark.parametrize("po", po_files(LOCALES_DIR), ids=lambda p: p.parent.parent.name)
def test_every_catalog_is_utf8_and_translates_the_short_code(po: Path) -> None:
    translation = gettext.GNUTranslations(io.BytesIO(compile_po(po)))
    translation.add_fallback(_Untranslated())
    assert translation.charset().lower() == "utf-8"
    assert translation.info()["language"] == po.parent.parent.name
    text = translation.gettext(SHORT_CODE_MSGID)
    assert text != "<untranslated>"
    assert CODE in text.format(code=CODE)


def test_runtime_does_not_import_babel() -> None:
    script = ("import sys; from msisdnd.verification.texts import SMSTexts; SMSTexts(); "
              "assert not [m for m in sys.modules if m.split('.')[0] == 'babel'], 'babel imported'")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parent.parent)


HEADER = """msgid ""
msgstr ""
"Language: xx\\n"
"Content-Type: text/plain; charset=UTF-8\\n"

"""
ENTRY = """#, python-brace-format
msgid "Your verification code is: {code}"
msgstr "MSGSTR"
"""


def _write_po(root: Path, text: str, locale: str = "xx") -> Path:
    po = root / locale / "LC_MESSAGES" / "msisdnd.po"
    po.parent.mkdir(parents=True)
    po.write_text(text, encoding="utf-8")
    return po


@pytest.mark.parametrize("po, error", [
    pytest.param(HEADER + ENTRY.replace("MSGSTR", "Code: {kode}"),
                 ":7: msgstr 'Code: {kode}' must use the placeholders of", id="other-name"),
    pytest.param(HEADER + ENTRY.replace("MSGSTR", "Code"),
                 ":7: msgstr 'Code' must use the placeholders of", id="no-placeholder"),
    pytest.param(HEADER + ENTRY.replace("MSGSTR", "Code: {{code}}"),
                 ":7: msgstr .* must use the placeholders of", id="escaped-braces"),
    pytest.param(HEADER + ENTRY.replace("MSGSTR", "Code: {}"),
                 ":7: msgstr 'Code: {}' must use the placeholders of", id="positional"),
    pytest.param(HEADER + ENTRY.replace("MSGSTR", "Code: {code"),
                 ":7: msgstr 'Code: {code' does not format", id="lone-brace"),
    pytest.param(HEADER + ENTRY.replace("#,", "#, fuzzy,"), ":7: fuzzy entry", id="fuzzy"),
    pytest.param("#, fuzzy\n" + HEADER + ENTRY, ": fuzzy header entry", id="fuzzy-header"),
    pytest.param(HEADER.replace("UTF-8", "ISO-8859-1") + ENTRY,
                 ": the header entry must declare charset=UTF-8", id="latin-1"),
    pytest.param(ENTRY, ": the header entry must declare charset=UTF-8", id="no-header"),
    pytest.param(HEADER + "msgid \"Your verification code is: {code}\"\n",
                 ":6: missing msgstr", id="no-msgstr"),
    pytest.param(HEADER + ENTRY.replace("msgstr", "msgtsr"),
                 ":8: Unknown or misformatted keyword", id="bad-keyword"),
    pytest.param('"stray"\n' + HEADER + ENTRY, ":1: Got line starting with \"", id="stray-string"),
])
def test_broken_catalog_refused_at_compile(tmp_path: Path, po: str, error: str) -> None:
    path = _write_po(tmp_path, po)
    with pytest.raises(POError, match=rf"^{re.escape(str(path))}{error}"):
        compile_po(path)


def test_main_compiles_nothing_when_a_catalog_is_broken(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write_po(tmp_path, HEADER + ENTRY.replace("MSGSTR", "Code: {code}"), "aa")
    bad = _write_po(tmp_path, HEADER + ENTRY.replace("MSGSTR", "Code"), "bb")
    assert main([str(tmp_path)]) == 1
    assert f"{bad}:7: msgstr 'Code' must use the placeholders" in capsys.readouterr().err
    assert not list(tmp_path.glob("*/LC_MESSAGES/*.mo"))

    bad.write_text(HEADER + ENTRY.replace("MSGSTR", "Kode: {code}"), encoding="utf-8")
    assert main([str(tmp_path)]) == 0
    assert good.with_suffix(".mo").read_bytes() == compile_po(good)
    assert gettext.translation("msisdnd", tmp_path, ["bb"]).gettext(SHORT_CODE_MSGID) == (
        "Kode: {code}")
