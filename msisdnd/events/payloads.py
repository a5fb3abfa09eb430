"""What a webhook receives: an event entry made into its JSON payload.

The stream keeps references and sealed numbers; the payload is built when
it is delivered, for each webhook: the Standard Webhooks shape
C{{"type", "timestamp", "data"}}, where C{data} carries

  - for C{verification.*}: the verification as C{GET /v2/verifications/{id}}
    shows it (without C{to} unless the webhook has C{include_number}), the
    API key's name, the per-verification C{sequence}, and for
    C{verification.delivery} / C{.failed} the C{attempt} concerned and its
    C{delivery};
  - for C{device.*}: the pairwise subject of the JWT certificate for the
    webhook's C{audience}, the C{method} (C{sms/mt}, C{sms/momt}), the
    per-session C{sequence}, and the number only with C{include_number}.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from msisdnd.events.config import WebhookConfig
from msisdnd.state import keys
from msisdnd.state.events import Entry
from msisdnd.state.redis import text
from msisdnd.verification import codes
from msisdnd.verification.backend import (
    DELIVERY,
    Status,
    status_of,
    verification_id_of,
    verification_view,
)
from msisdnd.verification.certs import Signer
from msisdnd.verification.settings import Secrets

_METHODS = {"t": "sms/mt", "o": "sms/momt"}


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def owner_of(entry: Entry) -> str | None:
    """The name of the API key a backend event is about, as it was when the
    verification began (C{None} for device events)."""
    owner = entry.fields.get("f.kn")
    return owner.decode() if owner else None


class Payloads:
    """Builds each webhook's payload of an entry.

    @param signer: makes the device events' pairwise subjects.
    """

    def __init__(self, secrets: Secrets, signer: Signer):
        self.secrets = secrets
        self.signer = signer

    def build(self, entry: Entry, webhook: WebhookConfig,
              api_key: str | None = None) -> bytes | None:
        """The payload of C{entry} for C{webhook}, or C{None} when the event
        cannot be told (a sealed number that no longer opens)."""
        fields = entry.fields
        kind = entry.type
        sequence = int(fields.get("sq", 0))
        if kind.startswith("verification."):
            data = self._verification(fields, webhook, api_key)
        else:
            data = self._device(fields, webhook)
        if data is None:
            return None
        data["sequence"] = sequence
        return json.dumps({"type": kind, "timestamp": _time(int(fields.get("ts", 0))),
                           "data": data}, separators=(",", ":")).encode()

    def _verification(self, fields: dict, webhook: WebhookConfig,
                      api_key: str | None) -> dict | None:
        snapshot = {name[2:]: value for name, value in fields.items() if name.startswith("f.")}
        ref = keys.session_ref_of(fields["s"])
        status = status_of(snapshot) or Status.PENDING
        data = verification_view(verification_id_of(ref), snapshot, status,
                                 self.secrets.backend, include_number=webhook.include_number)
        data["api_key"] = api_key
        attempt = fields.get("da")
        if attempt is not None:
            data["attempt"] = int(attempt)
            state = fields.get("ds")
            if state is not None:
                data["delivery"] = DELIVERY.get(text(state), "pending")
        return data

    def _device(self, fields: dict, webhook: WebhookConfig) -> dict | None:
        plain = codes.unseal(self.secrets.events, fields.get("n", b""))
        if plain is None:
            return None
        msisdn = plain.decode()
        data = {"subject": self.signer.subject(msisdn, webhook.audience),
                "audience": webhook.audience}
        method = fields.get("m")
        if method is not None:
            data["method"] = _METHODS.get(text(method), "sms/mt")
        if webhook.include_number:
            data["msisdn"] = msisdn
        return data
