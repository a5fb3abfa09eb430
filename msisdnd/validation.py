"""Validation of configuration tables: typed getters whose errors name the key.

Both the daemon's configuration loader (L{msisdnd.config}) and the carrier
tables (L{msisdnd.smpp.config}) read their TOML tables through L{Table}, and
report the first problem as a L{ConfigError}: one line naming where the value
is and what is wrong with it.

The rules are strict on purpose: an unknown key is an error (with the closest
known key suggested), C{true} is not an integer, and a key set to C{None}
(which TOML cannot express) counts as absent, so callers building tables in
Python can pass it.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NoReturn

PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


class ConfigError(ValueError):
    """A configuration value that cannot be used.

    The message is one line, C{"<file>: <path>: <problem>"}, or
    C{"<path>: <problem>"} while the file is not known yet, for example
    C{etc/msisdnd.toml: carrier[0] "orange".window: must be between 1 and
    1000, not 0}.  Empty parts are left out.

    @ivar path: where the value is (C{carrier[0] "orange".tls.ca_file},
        C{[http].public_url}).
    @ivar problem: what is wrong with it.
    @ivar file: the configuration file, as the operator named it, or C{None}.
    """

    def __init__(self, path: str, problem: str, file: str | None = None):
        self.path = path
        self.problem = problem
        self.file = file
        ValueError.__init__(self, ": ".join(
            part for part in (file, path, problem) if part))

    def in_file(self, file: str) -> ConfigError:
        """The same error, said of C{file} (unless it already names one)."""
        if self.file is not None:
            return self
        return type(self)(self.path, self.problem, file)

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str, str | None]]:
        return (type(self), (self.path, self.problem, self.file))


def kind(value: Any) -> str:
    """The TOML name of a value's type, with an article, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return f"a {type(value).__name__}"


def show(value: Any) -> str:
    """A value as the operator wrote it (C{true}, not C{True})."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def is_array(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


class Table:
    """One table being read: typed getters whose errors carry the key's path.

    Unknown keys are refused on construction, so a misspelt key is reported
    as such rather than as the required key it was meant to be.

    @cvar limit_reason: said after "must be at most N characters" when a
        L{string} is too long (e.g. C{" (SMPP carries no more)"}).
    """

    limit_reason = ""

    def __init__(self, data: Any, path: str, known: Collection[str],
                 misplaced: Mapping[str, str] | None = None):
        """
        @param path: how errors name this table; C{""} for the top level
            (keys are then named alone).
        @param misplaced: keys that belong elsewhere, with where they belong
            (for a hint better than "unknown").
        """
        if not isinstance(data, Mapping):
            raise ConfigError(path, f"must be a table, not {kind(data)}")
        self.data = data
        self.path = path
        for key in data:
            if key in known:
                continue
            if not isinstance(key, str):
                raise ConfigError(path, f"keys must be strings, not {key!r}")
            if misplaced and key in misplaced:
                self.fail(key, f"not allowed here; {misplaced[key]}")
            close = difflib.get_close_matches(key, list(known), n=1)
            if close:
                self.fail(key, f"unknown key; did you mean {close[0]!r}?")
            self.fail(key, f"unknown key; known keys are {', '.join(sorted(known))}")

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(self.at(key), problem)

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def string(self, key: str, default: Any = None, *, limit: int | None = None,
               required: bool = False, empty: bool = True, secret: bool = False) -> Any:
        """A string of printable ASCII, at most C{limit} characters.

        @param secret: keep the value out of the error message.
        """
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return default
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {kind(value)}")
        if not value and not empty:
            self.fail(key, "must not be empty")
        if not PRINTABLE_ASCII.fullmatch(value):
            self.fail(key, "must be printable ASCII" + ("" if secret else f", not {value!r}"))
        if limit is not None and len(value) > limit:
            self.fail(key, f"must be at most {limit} characters{self.limit_reason}, "
                           f"not {len(value)}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, not {kind(value)} ({show(value)})")
        if not low <= value <= high:
            self.fail(key, f"must be between {low} and {high}, not {value}")
        return value

    def number(self, key: str, default: float, *, above: float | None = None,
               least: float | None = None, most: float | None = None) -> float:
        """A finite number of seconds (or per second); an integer is welcome."""
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be a number, not {kind(value)} ({show(value)})")
        value = float(value)
        if not math.isfinite(value):
            self.fail(key, f"must be a finite number, not {value}")
        if above is not None and not value > above:
            self.fail(key, f"must be greater than {above:g}, not {value:g}")
        if least is not None and not value >= least:
            self.fail(key, f"must be at least {least:g}, not {value:g}")
        if most is not None and not value <= most:
            self.fail(key, f"must be at most {most:g}, not {value:g}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {kind(value)} ({show(value)})")
        return value

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or value not in choices:
            self.fail(key, f"must be one of {', '.join(map(repr, choices))}, not {show(value)}")
        return value

    def array(self, key: str) -> Sequence[Any]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not is_array(value):
            self.fail(key, f"must be an array, not {kind(value)}")
        return value

    def codes(self, key: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
        """An array of digit strings matching C{pattern}, duplicates dropped."""
        found: dict[str, None] = {}
        for i, item in enumerate(self.array(key)):
            if not isinstance(item, str) or not pattern.fullmatch(item):
                self.fail(f"{key}[{i}]", f"must be {what} as a string, not {item!r}")
            found[item] = None
        return tuple(found)
