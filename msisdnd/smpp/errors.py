"""Errors of one SMPP session, as its callers see them."""

from __future__ import annotations

from msisdnd.smpp import codec


class SMPPError(Exception):
    """A request that did not get an ESME_ROK answer."""


class CommandStatusError(SMPPError):
    """The peer answered a request with an error status.

    @ivar status: the command_status of the response (or of the
        C{generic_nack} that carried the request's sequence number).
    @ivar command: the name of the response command.
    """

    def __init__(self, status: int, command: str):
        super().__init__(f"{command}: {codec.status_name(status)}")
        self.status = status
        self.command = command

    @property
    def status_name(self) -> str:
        return codec.status_name(self.status)


class BindRefused(CommandStatusError):
    """The SMSC refused our bind."""


class ResponseTimeout(SMPPError):
    """No response came within the session's C{response_timeout}.

    The session stays up; the request may or may not have been acted on.
    """


class SessionClosed(SMPPError):
    """The session closed before the request was answered."""


class MalformedResponse(SMPPError):
    """A response arrived for the request but could not be decoded."""


class NotBound(SMPPError):
    """The session is not bound (or is unbinding) and takes no new requests."""
