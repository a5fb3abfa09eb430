"""Phone numbers made safe for logs."""

from __future__ import annotations

_KEEP = 5


def mask_number(number: str) -> str:
    """C{number} with all but its first five characters replaced by C{X}.

    For an E.164 number that keeps the C{+}, the country code and the start
    of the national number (C{"+33612345678"} gives C{"+3361XXXXXXX"}), enough
    to tell carriers and countries apart in logs, not enough to dial.  A
    string of five characters or fewer comes back unchanged.
    """
    return number[:_KEEP] + "X" * max(0, len(number) - _KEEP)
