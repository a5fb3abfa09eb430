"""C{twistd msisdnd --config PATH}: the msisdnd daemon."""

from twisted.application.service import ServiceMaker

msisdnd = ServiceMaker(
    "msisdnd",
    "msisdnd.tap",
    "Phone-number (MSISDN) verification gateway: HTTP API, SMPP binds, Redis state",
    "msisdnd",
)
