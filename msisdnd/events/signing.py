"""Standard Webhooks signatures: the three headers of one delivery attempt.

Every attempt of one event keeps its C{webhook-id} and gets a fresh
timestamp and signature (receivers refuse timestamps older than about five
minutes).  Each of the webhook's secrets signs, so that a receiver may
rotate its secret: it accepts the delivery if any signature verifies.
"""

from __future__ import annotations

from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook


class Signer:
    """Signs payloads with a webhook's secrets (C{whsec_...})."""

    def __init__(self, secrets: tuple[str, ...]):
        self._webhooks = [Webhook(secret) for secret in secrets]

    def headers(self, message_id: str, body: bytes, now: float) -> dict[str, str]:
        """The C{webhook-id}, C{webhook-timestamp} and C{webhook-signature} headers."""
        moment = datetime.fromtimestamp(int(now), timezone.utc)
        data = body.decode()
        signatures = " ".join(w.sign(message_id, moment, data) for w in self._webhooks)
        return {"webhook-id": message_id, "webhook-timestamp": str(int(now)),
                "webhook-signature": signatures}
