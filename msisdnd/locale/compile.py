"""Compile msisdnd's C{.po} catalogs to GNU C{.mo} files, with Babel.

Run C{python -m msisdnd.locale.compile} after editing a C{.po} file: it
rewrites the C{msisdnd.mo} next to every C{<lang>/LC_MESSAGES/msisdnd.po}
under this directory.  The C{.mo} files are committed, so nothing needs a
compiler at build or run time: the daemon reads them with L{gettext} alone,
and Babel (a test and development dependency) is imported only here.  A test
recompiles every catalog in memory and checks that the committed file is
byte-identical.

Babel reads and writes the files (L{babel.messages.pofile},
L{babel.messages.mofile}); on top of it a catalog is refused, with
L{POError}, when it:
  - is malformed as far as Babel's parser can tell;
  - does not declare C{charset=UTF-8} in its header entry;
  - has a C{fuzzy} entry: it needs review, and Babel would silently leave
    it out;
  - has a C{python-brace-format} entry whose C{msgstr} does not use exactly
    the C{{placeholders}} of its C{msgid}.
Untranslated entries (empty C{msgstr}) are left out, as C{msgfmt} does.

The header entry is written as the C{.po} file has it.  Babel would rebuild
it, stamping the time of the run and its own version, and the committed
C{.mo} files would never be current.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from string import Formatter
from typing import Final

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import PoFileError, PoFileParser

DOMAIN: Final = "msisdnd"
LOCALE_DIR: Final = Path(__file__).resolve().parent

_CHARSET: Final = re.compile(r"charset=([^\s;]+)", re.IGNORECASE)


class POError(ValueError):
    """A C{.po} file that does not compile; the message names the file and line."""


class _Catalog(Catalog):
    """A Babel catalog whose header entry is the C{.po} file's fields, in order."""

    _header: list[tuple[str, str]] = []

    @property
    def mime_headers(self) -> list[tuple[str, str]]:
        return self._header

    @mime_headers.setter
    def mime_headers(self, headers: list[tuple[str, str]]) -> None:
        self._header = list(headers)
        Catalog.mime_headers.fset(self, self._header)  # charset, plural forms...


def _placeholders(text: str) -> set[str]:
    """The names of the C{str.format} fields in C{text}.

    @raise ValueError: C{text} is not a valid format string (a lone brace).
    """
    return {name for _, name, _, _ in Formatter().parse(text) if name is not None}


def compile_po(path: Path) -> bytes:
    """The C{.mo} bytes for the C{.po} file at C{path}.

    @raise POError: the catalog is malformed or breaks one of the rules in
        this module's docstring.
    """
    catalog = _Catalog()
    try:
        with path.open("rb") as po:
            PoFileParser(catalog, abort_invalid=True).parse(po)
    except PoFileError as e:
        problem = str(e).removesuffix(f" on {e.lineno}")  # Babel counts lines from 0
        raise POError(f"{path}:{e.lineno + 1}: {problem}") from None

    header = {name.lower(): value for name, value in catalog.mime_headers}
    charset = _CHARSET.search(header.get("content-type", ""))
    if charset is None or charset.group(1).lower() != "utf-8":
        raise POError(f"{path}: the header entry must declare charset=UTF-8")
    for message in catalog:
        where = f"{path}:{message.lineno}" if message.lineno else str(path)
        if message.fuzzy:
            entry = f"entry {message.id!r}" if message.id else "header entry"
            raise POError(f"{where}: fuzzy {entry}; review it and remove the flag")
        if "python-brace-format" not in message.flags or not message.string:
            continue
        try:
            wrong = _placeholders(message.string) != _placeholders(message.id)
        except ValueError as e:
            raise POError(f"{where}: msgstr {message.string!r} does not format: {e}") from None
        if wrong:
            raise POError(
                f"{where}: msgstr {message.string!r} must use the placeholders of {message.id!r}")

    mo = io.BytesIO()
    write_mo(mo, catalog)
    return mo.getvalue()


def po_files(root: Path = LOCALE_DIR) -> list[Path]:
    """Every C{<lang>/LC_MESSAGES/msisdnd.po} under C{root}, sorted."""
    return sorted(root.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def main(argv: list[str] | None = None) -> int:
    """Write C{msisdnd.mo} beside each catalog under the given directory (default: here).

    Every catalog is compiled before any file is written: when one fails,
    the error goes to stderr, nothing changes, and the exit status is 1.
    """
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else LOCALE_DIR
    paths = po_files(root)
    if not paths:
        print(f"no {DOMAIN}.po catalogs under {root}", file=sys.stderr)
        return 1
    try:
        compiled = [(path, compile_po(path)) for path in paths]
    except POError as e:
        print(e, file=sys.stderr)
        return 1
    for path, data in compiled:
        target = path.with_suffix(".mo")
        target.write_bytes(data)
        print(f"{path} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
