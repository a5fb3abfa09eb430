"""What an operator changes in a running daemon: carrier suspensions, binds,
the log level, and the configuration (a reload).

L{Control} is the L{msisdnd.api.admin_actions.AdminActions} of the daemon;
SIGHUP asks it for a reload too.

A reload reads the configuration file again and validates it whole, keys
included; a file with any problem is refused, with the same one line
C{check-config} prints, and the running configuration is kept.  Otherwise
it applies, without a restart:

  - C{[[carrier]]}: added carriers bind, removed ones stop taking sends,
    drain and unbind, changed ones are replaced (rebound); an unchanged
    carrier's binds are not touched;
  - C{[limits]}, C{[log] level} and C{access}, C{[keys]} (the first key of each list
    signs, all are published), C{[admin] token_file}, C{[[webhook]]}.

The other sections (C{[http]}, C{[admin] listen}, C{[redis]}, C{[secrets]},
C{[verification]}, C{[sms]}, C{[service]}, C{[dev]}, C{[log] format}) take
effect at the next restart: a reload that changes them says so, and the
running configuration keeps their old values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet.defer import DeferredLock, inlineCallbacks
from twisted.logger import Logger

from msisdnd import logs
from msisdnd.api.admin_actions import ActionRefused
from msisdnd.config import Config, ConfigError, load_config
from msisdnd.verification import certs
from msisdnd.verification.flows import MOVerifier

log = Logger()

#: The sections a reload does not apply (the running daemon keeps their values).
RESTART_ONLY = ("http", "redis", "secrets", "verification", "sms", "environment", "dev")


def mo_verifiers(config: Config) -> tuple[MOVerifier, ...]:
    """The carriers' silent-SMS numbers, for the verifier."""
    return tuple(MOVerifier(c.name, c.mo_verifier, None) for c in config.carriers
                 if c.mo_verifier)


def signing_keys(config: Config) -> tuple[list, list]:
    """The C{[keys]}, loaded: BrowserID keys, JWT keys, the current first.

    @raise ValueError: a key cannot be loaded (the message names its file).
    """
    def load(path: str):
        try:
            return certs.load_signing_key(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    return [load(p) for p in config.keys.browserid], [load(p) for p in config.keys.jwt]


class Control:
    """The daemon's run-time controls (see the module's docstring).

    @param daemon: the L{msisdnd.daemon.Daemon}, whose parts it changes.
    """

    def __init__(self, daemon: Any):
        self.daemon = daemon
        self._reloading = DeferredLock()

    # -- carriers ----------------------------------------------------------

    def _carrier(self, name: str) -> None:
        self.daemon.carriers.carrier(name)  # UnknownCarrier, a 404

    @inlineCallbacks
    def suspend(self, carrier: str, unbind: bool, by: str):
        self._carrier(carrier)
        try:
            yield self.daemon.suspensions.suspend(carrier, unbind, by)
        except Exception as e:
            raise ActionRefused(503, f"the suspension could not be stored in Redis: {e}")
        return {"carrier": carrier, "suspended": True, "unbind": unbind}

    @inlineCallbacks
    def resume(self, carrier: str, by: str):
        self._carrier(carrier)
        try:
            yield self.daemon.suspensions.resume(carrier)
        except Exception as e:
            raise ActionRefused(503, f"the resumption could not be stored in Redis: {e}")
        return {"carrier": carrier, "suspended": False}

    @inlineCallbacks
    def rebind(self, carrier: str):
        try:
            yield self.daemon.carriers.rebind(carrier)
        except ValueError as e:  # its TLS files: nothing was touched
            raise ActionRefused(409, f"not rebound, its binds are kept: {e}")
        return {"carrier": carrier, "rebound": True}

    def setLogLevel(self, level: str) -> dict:
        logs.set_level(level)
        log.info("The log level is now {log_level_name}", log_level_name=level)
        return {"level": level}

    # -- reload ------------------------------------------------------------

    def reload(self):
        """Re-read and apply the configuration file (one reload at a time).

        @return: a Deferred firing with what changed
            (C{{"carriers": {"added", "removed", "changed"}, "restart_needed": [...]}});
            failing with L{ActionRefused} (409) when the file is refused.
        """
        return self._reloading.run(self._reload)

    @inlineCallbacks
    def _reload(self):
        daemon = self.daemon
        old: Config = daemon.config
        try:
            new = load_config(old.path)
            browserid, jwt = signing_keys(new)
            certs.Signer(browserid_keys=browserid, jwt_keys=jwt, issuer_host="check",
                         issuer_url="check", pseudonym_secret=bytes(32))
        except ConfigError as e:
            raise self._refused(str(e))
        except ValueError as e:
            raise self._refused(f"{old.path}: [keys]: {e}")
        for warning in new.warnings:
            log.warn("{warning}", warning=warning)
        restart = [f"[{name}]" for name in RESTART_ONLY
                   if getattr(new, name) != getattr(old, name)]
        if new.admin.listen != old.admin.listen:
            restart.append("[admin] listen")
        if new.log.format != old.log.format:
            restart.append("[log] format")
        running = dataclasses.replace(
            new, admin=dataclasses.replace(new.admin, listen=old.admin.listen),
            log=dataclasses.replace(new.log, format=old.log.format),
            **{name: getattr(old, name) for name in RESTART_ONLY})
        try:
            changes = daemon.carriers.reconfigure(new.carriers)  # fails at once, or applies
        except ValueError as e:
            raise self._refused(f"{old.path}: [[carrier]]: {e}")
        daemon.config = running
        logs.set_level(new.log.level)  # also undoes a log-level action
        daemon.site.accessLog = new.log.access
        daemon.signer.useKeys(browserid, jwt)
        daemon.limits.use(new.limits)
        changes = yield changes
        daemon.daily_caps.use(daemon.carriers.carriers, new.limits.daily_sms_budget)
        daemon.verifier.useMOVerifiers(mo_verifiers(new))
        daemon.discovery.use(new.carriers)
        if new.webhooks != old.webhooks:
            yield daemon.useWebhooks(new.webhooks)
        for name in restart:
            log.warn("Reload: {section} changed; it takes effect at the next restart",
                     section=name)
        log.info("The configuration {path} is reloaded: carriers added {added}, removed "
                 "{removed}, changed {changed}", path=old.path,
                 **{k: ", ".join(v) or "none" for k, v in changes.items()})
        return {"carriers": changes, "restart_needed": restart}

    @staticmethod
    def _refused(why: str) -> ActionRefused:
        log.error("Reload refused, the running configuration is kept: {why}", why=why)
        return ActionRefused(409, f"the new configuration is refused, the running one is "
                                  f"kept: {why}")
