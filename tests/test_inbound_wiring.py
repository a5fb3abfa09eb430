"""A carrier's own receipt_id_format and mo_charset reach its InboundDispatcher.

L{Carrier} builds the dispatcher; these settings only take effect once it
passes them on.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from msisdnd.smpp.carrier import Carrier
from msisdnd.smpp.config import CarrierConfig

from test_inbound import RecordingMOReceiver, RecordingReceiptReceiver, deliver_sm


def test_carrier_passes_its_receipt_id_format_and_mo_charset_on():
    config = CarrierConfig.from_mapping(
        {"name": "acme", "host": "127.0.0.1", "system_id": "esme",
         "receipt_id_format": "hex-to-decimal", "mo_charset": "ascii"}, "carrier[acme]")
    mo, receipts = RecordingMOReceiver(), RecordingReceiptReceiver()
    carrier = Carrier(config, Clock(), mo_receiver=mo, receipt_receiver=receipts)
    carrier.inbound(deliver_sm(esm_class=0x04, short_message=b"id:6699 stat:DELIVRD"))
    carrier.inbound(deliver_sm(data_coding=0, short_message=b"user@example"))
    assert [r.message_id for r in receipts.receipts] == ["1a2b"]
    assert [m.text for m in mo.messages] == ["user@example"]
