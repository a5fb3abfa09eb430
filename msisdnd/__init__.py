"""msisdnd: prove that a device controls a phone number.

The package's rooms follow the data path, and imports point one way (the
import-linter contracts in setup.cfg hold it)::

    api -> verification -> state
           verification -> sms <- smpp
    device -> hawk (and nothing else of the daemon)
"""

__version__ = "0.1.0.dev0"
