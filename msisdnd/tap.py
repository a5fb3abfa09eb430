"""The twistd plugin's options and service maker (C{twistd msisdnd --help})."""

from __future__ import annotations

import sys

from twisted.python import usage

from msisdnd.config import ConfigError, load_config


class Options(usage.Options):
    synopsis = "--config PATH"
    optParameters = [["config", "c", "/etc/msisdnd/msisdnd.toml", "The configuration file."]]


def makeService(options: Options):
    """Load and check the configuration, then build the daemon.

    A bad configuration or key stops here with one line on stderr naming the
    file, the key and the problem, and exit status 2: nothing has listened.
    The daemon brings its own log observer (L{msisdnd.logs.for_twistd}), so
    C{[log]} holds without C{twistd --logger}.
    """
    from twisted.internet import reactor

    from msisdnd import logs
    from msisdnd.daemon import Daemon

    try:
        config = load_config(options["config"])
        logs.configure(config.log.format, config.log.level)
        for warning in config.warnings:
            print(f"msisdnd: warning: {warning}", file=sys.stderr)
        daemon = Daemon(config, reactor)
        daemon.logObserver = logs.for_twistd(getattr(options, "parent", None), reactor)
        return daemon
    except ConfigError as e:
        print(f"msisdnd: {e}", file=sys.stderr)
    except (OSError, ValueError) as e:
        print(f"msisdnd: {options['config']}: {e}", file=sys.stderr)
    raise SystemExit(2)
