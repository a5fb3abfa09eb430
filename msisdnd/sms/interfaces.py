"""The SMS boundary between verification logic and the carrier side.

C{flows} calls an L{ISMSSender} and implements L{IMOReceiver} and
L{IReceiptReceiver}; C{msisdnd.smpp} provides the sender and calls the
receivers.  Neither side imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from zope.interface import Interface


@dataclass(frozen=True, slots=True)
class OutboundSMS:
    """One mobile-terminated text to send.

    @ivar destination: the number in E.164 form, with its C{+}.
    @ivar text: the text; the carrier picks the alphabet and splits it.
    @ivar validity: seconds the SMSC may keep trying before it drops the
        message (the code's remaining lifetime), or C{None} for its default.
    @ivar sender: the source address, or C{None} for the carrier's
        C{mt_sender}.
    @ivar mcc: the mobile country code the client told us, if any (routing).
    @ivar mnc: the mobile network code the client told us, if any (routing).
    @ivar carrier: send through this carrier only (an MO's reply goes back
        through the carrier it came in on), or C{None} to let the router pick.
    @ivar avoid: a carrier to try last (one that just failed to deliver).
    """

    destination: str
    text: str
    validity: float | None = None
    sender: str | None = None
    mcc: str | None = None
    mnc: str | None = None
    carrier: str | None = None
    avoid: str | None = None


class SendResult(NamedTuple):
    """An SMS the SMSC accepted: which carrier, and its message ids (one per part).

    Immutable, like the seam's other types; a named tuple rather than a
    frozen dataclass because one is made per message on the send path.
    """

    carrier: str
    message_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MOMessage:
    """A mobile-originated text, whole (concatenated parts joined).

    @ivar source: the sender, normalized to E.164 (C{+...}), or the raw
        address when it is not a phone number (alphanumeric senders).
    @ivar destination: our number it was sent to, as the SMSC gave it.
    """

    carrier: str
    source: str
    destination: str
    text: str


#: Receipt states after which a message will not arrive, so a code it carried
#: is worth replacing and sending again.  C{DELETED} is not one: the message
#: was withdrawn at the SMSC on purpose (by us or its operator).
UNDELIVERED = frozenset({"UNDELIV", "REJECTD", "EXPIRED"})


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """What a carrier said became of a message it accepted.

    A receipt names exactly one message: the submit whose C{submit_sm_resp}
    id, normalized, is C{message_id} (the carrier's C{receipt_id_format} was
    applied already; see C{msisdnd.sms.message_ids.receipt_message_id}).

    @ivar message_id: the normalized id of the submit the receipt is about.
    @ivar aliases: the ids to look the message up under: exactly
        C{{message_id}} (a set, as the store's lookup takes one).  Never
        several readings: those would find other messages.
    @ivar state: the final or intermediate state name: C{DELIVRD},
        C{EXPIRED}, C{DELETED}, C{UNDELIV}, C{ACCEPTD}, C{UNKNOWN},
        C{REJECTD} or C{ENROUTE}.
    @ivar error: the carrier's error code, if it sent one.
    @raise ValueError: C{aliases} other than C{{message_id}}.
    """

    carrier: str
    message_id: str
    aliases: frozenset[str]
    state: str
    error: str | None = None

    def __post_init__(self) -> None:
        if self.aliases != {self.message_id}:
            raise ValueError(f"a receipt is looked up under its one message id "
                             f"{self.message_id!r}, not {sorted(self.aliases)!r}")

    @property
    def failed(self) -> bool:
        """The message will not arrive (its state is in L{UNDELIVERED})."""
        return self.state in UNDELIVERED


class SendError(Exception):
    """An SMS that did not reach the SMSC, or that it refused."""

    #: Whether trying again later, or elsewhere, may succeed.
    temporary = True


class NoRouteError(SendError):
    """No carrier with a live bind serves this destination."""


class QueueFullError(SendError):
    """The carrier's queue is full: back-pressure, tried at once."""


class SendTimeoutError(SendError):
    """The SMSC did not accept the message before its deadline; it was withdrawn."""


class RejectedError(SendError):
    """The SMSC refused the message with a final status.

    @ivar status: the SMPP command_status.
    @ivar status_name: its name, such as C{ESME_RINVDSTADR}.
    """

    temporary = False

    def __init__(self, status: int, status_name: str, carrier: str):
        super().__init__(f"{carrier} refused the message: {status_name}")
        self.status = status
        self.status_name = status_name
        self.carrier = carrier


class ISMSSender(Interface):
    """Sends mobile-terminated SMS."""

    def send(sms: OutboundSMS, timeout: float | None = None):
        """
        Send C{sms}, waiting at most C{timeout} seconds (the configured
        C{send_timeout} when C{None}) for the SMSC to accept every part.

        @return: a Deferred that fires with a L{SendResult}, or fails with a
            L{SendError}.  A message not accepted in time is withdrawn from
            every queue before the Deferred fails with L{SendTimeoutError}.
        """

    def available() -> bool:
        """Whether at least one carrier has a live transmitting bind."""


class IMOReceiver(Interface):
    """Takes the mobile-originated messages the carriers deliver."""

    def moReceived(message: MOMessage):
        """Handle one whole MO message.  May return a Deferred; failures are logged."""


class IReceiptReceiver(Interface):
    """Takes delivery receipts."""

    def receiptReceived(receipt: DeliveryReceipt):
        """Handle one receipt.  It may arrive before the submit's response."""


__all__ = [
    "DeliveryReceipt", "IMOReceiver", "IReceiptReceiver", "ISMSSender",
    "MOMessage", "NoRouteError", "OutboundSMS", "QueueFullError", "RejectedError",
    "SendError", "SendResult", "SendTimeoutError", "UNDELIVERED",
]
