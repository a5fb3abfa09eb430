"""msisdnd: prove that a device controls a phone number.

The package is laid out so that imports point one way::

    api -> flows -> store / sms -> smpp.policy -> smpp.protocol -> smpp.codec
"""

__version__ = "0.1.0.dev0"
