"""The request fields both APIs read, validated: numbers, digits, app hashes."""

from __future__ import annotations

import phonenumbers

from msisdnd.api import errors


def digits(value: object, name: str, lengths: tuple[int, ...]) -> str:
    if not isinstance(value, str) or not value.isdigit() or not value.isascii() \
            or len(value) not in lengths:
        raise errors.invalid(f"Invalid {name}.")
    return value


def msisdn(value: object) -> str:
    """E.164 from what the client sent; it must parse and be a valid number."""
    if not isinstance(value, str) or len(value) > 32:
        raise errors.invalid("Invalid MSISDN number.")
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise errors.invalid("Invalid MSISDN number.") from None
    if not phonenumbers.is_valid_number(number):
        raise errors.invalid("Invalid MSISDN number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)




def app_hash(value: object) -> str | None:
    """An Android SMS Retriever app hash (11 characters of base64), or C{None}."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 11 or not value.isascii() or not all(
            c.isalnum() or c in "+/" for c in value):
        raise errors.invalid("appHash must be the app's 11-character hash.")
    return value
