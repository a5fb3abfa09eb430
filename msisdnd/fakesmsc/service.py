"""C{twistd fakesmsc}: the fake SMSC's SMPP listener and its HTTP side as one service.

The twistd plugin (C{twisted/plugins/fakesmsc_plugin.py}) imports this
module only when C{fakesmsc} is the chosen subcommand, and this module
imports the SMSC, Klein and Twisted Web only in L{makeService}, so that
C{twistd --help} stays cheap.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.python import usage

RECEIPT_FORMS = ("tlv", "text", "both")
RECEIPT_ID_BASES = ("hex", "decimal")


def receipt_delay(value: str) -> float | None:
    """Parse C{--receipt-delay}: seconds, or C{None} for "none" or a negative number."""
    if value.strip().lower() in ("none", "off", ""):
        return None
    seconds = float(value)
    if seconds != seconds or seconds == float("inf"):
        raise ValueError("the receipt delay must be a finite number")
    return None if seconds < 0 else seconds


receipt_delay.coerceDoc = 'Seconds, or "none" / a negative number for no receipts.'  # type: ignore[attr-defined]


class FakeSMSCOptions(usage.Options):
    """Command-line options of C{twistd fakesmsc}."""

    synopsis = "[options]"
    longdesc = (
        "A fake SMSC for tests, load tests and demos: an SMPP 3.4 listener that "
        "accepts submit_sm, stores the messages and sends delivery receipts, and "
        "an HTTP side to read them (GET /receive?to=...), inject MO texts "
        "(POST /mo), show status (GET /) and turn fault knobs (POST /faults)."
    )
    optParameters = [
        ["smpp", None, "tcp:2775:interface=127.0.0.1",
         "strports description of the SMPP listener."],
        ["http", None, "tcp:8025:interface=127.0.0.1",
         "strports description of the HTTP listener."],
        ["system-id", None, None,
         "Accept only this system_id (with --password); default: accept any login."],
        ["password", None, "", "The password for --system-id."],
        ["receipt-delay", None, 1.0,
         "Seconds after acceptance to send the delivery receipt.", receipt_delay],
        ["receipt-form", None, "tlv",
         "How receipts say which message they are about: " + "|".join(RECEIPT_FORMS) + "."],
        ["receipt-id-base", None, "hex",
         "Quote message ids in receipts as issued (hex) or as decimal."],
    ]

    def postOptions(self) -> None:
        if self["receipt-form"] not in RECEIPT_FORMS:
            raise usage.UsageError(f"--receipt-form must be one of {', '.join(RECEIPT_FORMS)}")
        if self["receipt-id-base"] not in RECEIPT_ID_BASES:
            raise usage.UsageError(
                f"--receipt-id-base must be one of {', '.join(RECEIPT_ID_BASES)}")
        if self["password"] and self["system-id"] is None:
            raise usage.UsageError("--password needs --system-id")

    @property
    def credentials(self) -> dict[str, str] | None:
        """C{system_id -> password}, or C{None} to accept any login."""
        if self["system-id"] is None:
            return None
        return {self["system-id"]: self["password"]}


#: The name L{twisted.application.service.ServiceMaker} looks for.
Options = FakeSMSCOptions


class FakeSMSCService(MultiService):
    """The SMPP listener and the HTTP listener of one fake SMSC.

    @ivar smsc: the L{msisdnd.fakesmsc.smsc.FakeSMSC} both listeners share.
    """

    def __init__(self, smsc: object):
        super().__init__()
        self.smsc = smsc


def makeService(options: FakeSMSCOptions) -> FakeSMSCService:
    """A fake SMSC listening on C{options["smpp"]} and C{options["http"]}.

    Its clock is the global reactor.

    @raise ValueError: a strports description that does not parse.
    """
    from twisted.application import strports
    from twisted.internet import reactor
    from twisted.web.server import Site

    from msisdnd.fakesmsc.smsc import FakeSMSC
    from msisdnd.fakesmsc.web import FakeSMSCWeb

    smsc = FakeSMSC(
        reactor,
        credentials=options.credentials,
        receipt_delay=options["receipt-delay"],
        receipt_form=options["receipt-form"],
        receipt_id_base=options["receipt-id-base"],
    )
    service = FakeSMSCService(smsc)
    smpp = strports.service(options["smpp"], smsc.buildFactory())
    smpp.setName("smpp")
    smpp.setServiceParent(service)
    http = strports.service(options["http"], Site(FakeSMSCWeb(smsc).resource()))
    http.setName("http")
    http.setServiceParent(service)
    return service
