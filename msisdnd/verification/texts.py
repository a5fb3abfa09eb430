"""The texts of verification SMS: localized short-code texts, bare long codes.

The short code goes out as a sentence in the user's language, chosen from
the HTTP C{Accept-Language} header (L{SMSTexts.negotiate}), with two
optional machine-read lines after it:
  - an Android SMS Retriever app hash (11 characters of base64), on its own
    line, when the client gives one;
  - a WebOTP / origin-bound one-time-code line C{@host #code}, when the
    server is configured with a host.  It is always the last line, as the
    format requires.
The long code of the silent MO flow is sent bare and never localized: the
client reads it without showing it.

Catalogs are gettext C{.mo} files, domain C{msisdnd}, under
C{<locales_dir>/<lang>/LC_MESSAGES/}; a locale is available when its C{.mo}
file exists.  They are loaded once, when L{SMSTexts} is built, and each
translation is checked to format with a code then, not at send time.
"""

from __future__ import annotations

import gettext
import re
from pathlib import Path
from typing import Final, Iterable

DOMAIN: Final = "msisdnd"
LOCALES_DIR: Final = Path(__file__).resolve().parent.parent / "locale"

#: The msgid of the short-code text; C{{code}} is replaced by the code.
SHORT_CODE_MSGID: Final = "Your verification code is: {code}"

#: How much of an C{Accept-Language} header is read; the rest is ignored.
MAX_ACCEPT_LANGUAGE: Final = 256

_APP_HASH: Final = re.compile(r"[A-Za-z0-9+/]{11}")
_CODE: Final = re.compile(r"[A-Za-z0-9]+")
_HOST_LABEL: Final = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST: Final = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_LANGUAGE_RANGE: Final = re.compile(r"\*|[a-z]{1,8}(?:-[a-z0-9]{1,8})*")
_QVALUE: Final = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_PROBE: Final = "123456"  # formatted into every catalog text at load time



def _tag(name: str) -> str:
    """A locale directory name as a lowercase language tag (C{pt_BR} -> C{pt-br})."""
    return name.replace("_", "-").lower()


def _parse_accept_language(header: str) -> list[tuple[str, float]]:
    """The valid C{(range, q)} items of an C{Accept-Language} header, in order.

    Only the first L{MAX_ACCEPT_LANGUAGE} characters are read; when the header
    is longer, the item cut at that point is dropped too.  Items with a
    malformed range or q-value are skipped; a range that repeats keeps its
    first weight.
    """
    if len(header) > MAX_ACCEPT_LANGUAGE:
        header = header[:MAX_ACCEPT_LANGUAGE].rpartition(",")[0]
    items: dict[str, float] = {}
    for item in header.split(","):
        language, *params = (part.strip() for part in item.split(";"))
        language = language.lower()
        if not _LANGUAGE_RANGE.fullmatch(language):
            continue
        weight: float | None = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                weight = float(value) if _QVALUE.fullmatch(value) else None
                break
        if weight is not None and language not in items:
            items[language] = weight
    return list(items.items())


class SMSTexts:
    """The texts msisdnd sends, in the locales it has catalogs for.

    @ivar default_locale: the locale used when negotiation finds nothing better.
    @ivar locales: every available locale (directory names), sorted.
    @ivar webotp_host: the host of the origin-bound last line, or C{None}.
    """

    def __init__(
        self,
        default_locale: str = "en",
        locales_dir: Path | str = LOCALES_DIR,
        webotp_host: str | None = None,
        app_hashes: Iterable[str] = (),
    ) -> None:
        """Load every catalog under C{locales_dir}.

        @param app_hashes: the SMS Retriever app hashes clients may ask for
            (L{accepts_app_hash}); none by default, so that no client puts
            11 characters of its own text in an SMS to another number.

        @param webotp_host: the host relying parties' pages are served from,
            as an ASCII (punycode) DNS name without scheme or port; when set,
            short-code texts end with C{@host #code}.
        @raise ValueError: C{default_locale} has no catalog, a catalog's
            short-code text does not format with a code, or C{webotp_host} is not
            a DNS name.
        """
        if webotp_host is not None:
            webotp_host = webotp_host.lower()
            if len(webotp_host) > 253 or not _HOST.fullmatch(webotp_host):
                raise ValueError(f"webotp_host {webotp_host!r} is not an ASCII DNS name")
        self.webotp_host = webotp_host
        self.app_hashes = frozenset(app_hashes)

        self._texts: dict[str, str] = {}
        for mo in sorted(Path(locales_dir).glob(f"*/LC_MESSAGES/{DOMAIN}.mo")):
            name = mo.parent.parent.name
            with mo.open("rb") as handle:
                text = gettext.GNUTranslations(handle).gettext(SHORT_CODE_MSGID)
            try:
                formatted = text.format(code=_PROBE)
            except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{mo}: the short-code text does not format: {e!r}") from None
            if _PROBE not in formatted:
                raise ValueError(f"{mo}: the short-code text has no {{code}}")
            self._texts[name] = text
        self._by_tag = {_tag(name): name for name in self._texts}
        self.locales = tuple(sorted(self._texts))

        default = self._by_tag.get(_tag(default_locale))
        if default is None:
            raise ValueError(
                f"no catalog for the default locale {default_locale!r} "
                f"in {locales_dir} (have {list(self.locales)})")
        self.default_locale = default

    def _lookup(self, language: str) -> str | None:
        """The available locale a language tag falls back to (RFC 4647 lookup), if any."""
        tag = _tag(language)
        while tag:
            if tag in self._by_tag:
                return self._by_tag[tag]
            tag = tag.rpartition("-")[0]
        return None

    def negotiate(self, accept_language: str | None) -> str:
        """The best available locale for an HTTP C{Accept-Language} header.

        Language ranges are tried by descending q-value, then in header order;
        each falls back through its subtags (C{fr-CA} -> C{fr}).  C{*} stands
        for the default locale, or when the header refuses that (C{q=0}) for
        the first available locale it does not refuse.  Matching ignores
        case.  Malformed items are skipped, and only the first
        L{MAX_ACCEPT_LANGUAGE} characters are read.

        Never raises.

        @return: an available locale; the default when nothing acceptable is
            available, when the header is missing, or when it is junk.
        """
        if not isinstance(accept_language, str):
            return self.default_locale
        items = _parse_accept_language(accept_language)
        refused = {language for language, weight in items if weight == 0}
        ranked = sorted(
            (item for item in items if item[1] > 0), key=lambda item: item[1], reverse=True)
        for language, _ in ranked:
            if language == "*":
                for name in (self.default_locale, *self.locales):
                    if _tag(name) not in refused:
                        return name
                continue
            found = self._lookup(language)
            if found is not None and _tag(found) not in refused:
                return found
        return self.default_locale

    def short_code_text(self, code: str, locale: str, app_hash: str | None = None) -> str:
        """The SMS text carrying the short code C{code}.

        Lines, in order: the localized sentence; C{app_hash} when given; then
        C{@host #code} when a WebOTP host is configured, always last.

        @param locale: a locale as L{negotiate} returns; any other tag falls
            back through its subtags, then to the default locale.
        @param app_hash: an Android SMS Retriever app hash: exactly 11
            characters of C{A-Z a-z 0-9 + /}.
        @raise ValueError: C{app_hash} is malformed, or C{code} is not a
            non-empty run of ASCII letters and digits.
        """
        if not _CODE.fullmatch(code):
            raise ValueError("a code is ASCII letters and digits only")
        lines = [self._texts[self._lookup(locale) or self.default_locale].format(code=code)]
        if app_hash is not None:
            if not _APP_HASH.fullmatch(app_hash):
                raise ValueError("an SMS Retriever app hash is 11 characters of [A-Za-z0-9+/]")
            lines.append(app_hash)
        if self.webotp_host is not None:
            lines.append(f"@{self.webotp_host} #{code}")
        return "\n".join(lines)

    def accepts_app_hash(self, app_hash: str) -> bool:
        """Whether a client may have C{app_hash} put in its SMS (it is one of ours)."""
        return app_hash in self.app_hashes

    def long_code_text(self, code: str) -> str:
        """The SMS text carrying a long code (silent MO flow): the code, bare."""
        return code


__all__ = ["LOCALES_DIR", "SHORT_CODE_MSGID", "SMSTexts"]
