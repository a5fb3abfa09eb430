"""Compile msisdnd's C{.po} catalogs to GNU C{.mo} files, without GNU gettext.

Run C{python -m msisdnd.locale.compile} after editing a C{.po} file: it
rewrites the C{msisdnd.mo} next to every C{<lang>/LC_MESSAGES/msisdnd.po}
under this directory.  The C{.mo} files are committed, so nothing needs
gettext's C{msgfmt} at build or run time; a test recompiles every catalog in
memory and checks that the committed file is byte-identical.

Only the subset of the PO format msisdnd uses is understood, and anything
else is refused with L{POError} rather than guessed at:
  - comments (C{#} lines, including flags such as C{#, python-brace-format}),
    except the C{fuzzy} flag: a fuzzy entry needs review, not compilation;
  - C{msgid} / C{msgstr} pairs whose strings may continue on following
    C{"..."} lines (the header entry does), with the escapes C{\\n}, C{\\t},
    C{\\"} and C{\\\\};
  - the header entry (empty C{msgid}), whose charset must be UTF-8.
C{msgctxt}, C{msgid_plural} and C{#~} obsolete entries are not supported.
Entries with an empty C{msgstr} are untranslated and left out, as C{msgfmt}
does.

The output is the GNU layout with no hash table (what C{msgfmt --no-hash}
writes): a 28-byte little-endian header (magic 0x950412de, revision 0, the
number of strings N, the offsets of the original and translation tables, a
hash table size of 0 and its would-be offset), then the two tables of N
(length, offset) pairs sorted by original string, then the NUL-terminated
originals followed by the NUL-terminated translations.
"""

from __future__ import annotations

import re
import struct
import sys
from pathlib import Path
from typing import Final

MAGIC: Final = 0x950412DE
DOMAIN: Final = "msisdnd"
LOCALE_DIR: Final = Path(__file__).resolve().parent

_HEADER_SIZE: Final = 28
_ESCAPES: Final = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
_QUOTED: Final = re.compile(r'"((?:[^"\\]|\\.)*)"')
_KEYWORD: Final = re.compile(r"(msgid|msgstr)\s+(.*)")
_CHARSET: Final = re.compile(r"charset=([^\s;]+)", re.IGNORECASE)


class POError(ValueError):
    """A C{.po} file outside the supported subset, or malformed."""


def _unquote(text: str, where: str) -> str:
    """The value of one C{"..."} PO string literal."""
    match = _QUOTED.fullmatch(text.strip())
    if match is None:
        raise POError(f"{where}: expected a quoted string, got {text.strip()!r}")
    out: list[str] = []
    body, i = match.group(1), 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            escaped = body[i + 1]
            if escaped not in _ESCAPES:
                raise POError(f"{where}: unsupported escape \\{escaped}")
            out.append(_ESCAPES[escaped])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def parse_po(text: str, name: str = "<po>") -> dict[str, str]:
    """Read the supported PO subset into C{{msgid: msgstr}}.

    The header entry is kept under the empty msgid; untranslated entries
    (empty C{msgstr}) are dropped.

    @param name: the file name, for error messages.
    @raise POError: a construct outside the subset, a duplicate msgid, an
        entry missing half of its pair, or a header whose charset is not UTF-8.
    """
    catalog: dict[str, str] = {}
    msgid: str | None = None
    msgstr: str | None = None
    current: str | None = None  # which of the two the continuation lines extend
    fuzzy = False

    def finish(where: str) -> None:
        nonlocal msgid, msgstr, current, fuzzy
        if msgid is None and msgstr is None:
            fuzzy = False
            return
        if msgid is None or msgstr is None:
            raise POError(f"{where}: an entry needs both msgid and msgstr")
        if fuzzy:
            raise POError(f"{where}: fuzzy entry {msgid!r}; review it and remove the flag")
        if msgid in catalog:
            raise POError(f"{where}: duplicate msgid {msgid!r}")
        if msgstr:
            catalog[msgid] = msgstr
        msgid = msgstr = current = None
        fuzzy = False

    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#~"):
            raise POError(f"{where}: obsolete (#~) entries are not supported")
        if line.startswith("#"):
            if msgstr is not None:
                finish(where)
            if line.startswith("#,") and "fuzzy" in (f.strip() for f in line[2:].split(",")):
                fuzzy = True
            continue
        if line.startswith('"'):
            if current == "msgid" and msgid is not None:
                msgid += _unquote(line, where)
            elif current == "msgstr" and msgstr is not None:
                msgstr += _unquote(line, where)
            else:
                raise POError(f"{where}: a string continuation outside an entry")
            continue
        keyword = _KEYWORD.fullmatch(line)
        if keyword is None:
            raise POError(f"{where}: unsupported line {line.split()[0]!r}")
        if keyword.group(1) == "msgid":
            if msgstr is not None:
                finish(where)
            if msgid is not None:
                raise POError(f"{where}: msgid without msgstr before it")
            msgid, current = _unquote(keyword.group(2), where), "msgid"
        else:
            if msgid is None or msgstr is not None:
                raise POError(f"{where}: msgstr without a msgid")
            msgstr, current = _unquote(keyword.group(2), where), "msgstr"
    finish(f"{name}:end")

    charset = _CHARSET.search(catalog.get("", ""))
    if charset is None or charset.group(1).lower().replace("-", "") != "utf8":
        raise POError(f"{name}: the header entry must declare charset=UTF-8")
    return catalog


def build_mo(catalog: dict[str, str]) -> bytes:
    """The GNU C{.mo} bytes for C{catalog}: strings sorted by msgid, no hash table."""
    entries = sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in catalog.items())
    count = len(entries)
    originals_at = _HEADER_SIZE
    translations_at = originals_at + 8 * count
    strings_at = translations_at + 8 * count

    tables = [bytearray(), bytearray()]
    blob = bytearray()
    for column in (0, 1):
        for entry in entries:
            string = entry[column]
            tables[column] += struct.pack("<II", len(string), strings_at + len(blob))
            blob += string + b"\0"
    header = struct.pack(
        "<7I", MAGIC, 0, count, originals_at, translations_at, 0, strings_at)
    return header + bytes(tables[0]) + bytes(tables[1]) + bytes(blob)


def compile_po(path: Path) -> bytes:
    """The C{.mo} bytes for the C{.po} file at C{path}."""
    return build_mo(parse_po(path.read_text(encoding="utf-8"), str(path)))


def po_files(root: Path = LOCALE_DIR) -> list[Path]:
    """Every C{<lang>/LC_MESSAGES/msisdnd.po} under C{root}, sorted."""
    return sorted(root.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def main(argv: list[str] | None = None) -> int:
    """Write C{msisdnd.mo} beside each catalog under the given directory (default: here)."""
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else LOCALE_DIR
    paths = po_files(root)
    if not paths:
        print(f"no {DOMAIN}.po catalogs under {root}", file=sys.stderr)
        return 1
    for path in paths:
        target = path.with_suffix(".mo")
        target.write_bytes(compile_po(path))
        print(f"{path} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
