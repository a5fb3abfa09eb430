"""The C{twistd fakesmsc} plugin.

L{ServiceMaker} imports L{msisdnd.fakesmsc.service} only when its options or
C{makeService} are asked for, so listing plugins (C{twistd --help}) stays cheap.
"""

from twisted.application.service import ServiceMaker

fakeSMSC = ServiceMaker(
    "msisdnd fake SMSC",
    "msisdnd.fakesmsc.service",
    "A fake SMPP 3.4 SMSC with an HTTP side, for tests, load tests and demos.",
    "fakesmsc",
)
