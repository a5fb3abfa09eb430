"""Hawk authentication of a device request, around its Redis round trips.

L{HawkAuthenticator.authenticate} runs the steps L{msisdnd.hawk} lays out:
parse the header (no I/O), fetch the session's Hawk key (cached for a
while), check the MAC, the payload hash and the clock, and only then claim
the nonce in Redis, so a stranger's junk never costs a write.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime

from msisdnd import hawk
from msisdnd.state.sessions import SessionStore
from msisdnd.verification import codes

#: How long, and for how many sessions, a daemon keeps Hawk keys it fetched.
KEY_CACHE_SECONDS = 60.0
KEY_CACHE_SIZE = 50_000


class HawkAuthenticator:
    """Checks Hawk headers against the sessions in the store.

    @param session_secret: keys the HMAC a session is stored under.
    @param skew: how far a client's clock may be from ours, in seconds.
    """

    def __init__(self, sessions: SessionStore, session_secret: bytes, skew: float,
                 clock: IReactorTime):
        self.sessions = sessions
        self.session_secret = session_secret
        self.skew = skew
        self.clock = clock
        self._keys: dict[str, tuple[str, float]] = {}

    def hawkKey(self, hawk_id: str) -> Deferred:
        """Fires with the session's Hawk key (hex, as clients use it), or C{None}.

        Keys are cached for L{KEY_CACHE_SECONDS}: a key never changes, and a
        session dropped meanwhile (on any daemon) is still refused, since every
        step after authentication reads the session itself.
        """
        now = self.clock.seconds()
        cached = self._keys.get(hawk_id)
        if cached is not None and cached[1] > now:
            return succeed(cached[0])

        def found(raw: bytes | None) -> str | None:
            if not raw:
                return None
            key = raw.hex()
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.pop(next(iter(self._keys)))
            self._keys[hawk_id] = (key, now + KEY_CACHE_SECONDS)
            return key

        ref = codes.session_ref(self.session_secret, hawk_id)
        return self.sessions.hawkKey(ref).addCallback(found)

    def forget(self, hawk_id: str) -> None:
        """Drop a session's cached key (it was unregistered here)."""
        self._keys.pop(hawk_id, None)

    @inlineCallbacks
    def authenticate(self, authorization: str | None, *, method: str, url: str, content: bytes,
                     content_type: str):
        """Fires with the request's Hawk id once the MAC, the clock and the nonce check out.

        @param url: the URL the client signed, rebuilt from the configured
            public URL (never from the Host header).
        @raise hawk.HawkError: the subclass says why (400 or 401).
        """
        parsed = hawk.parse_header(authorization)
        key = yield self.hawkKey(parsed.id)
        if key is None:
            raise hawk.UnknownSession("Unknown session.")
        hawk.verify_request(parsed, hawk.HawkCredentials(parsed.id, key), method=method, url=url,
                            content=content, content_type=content_type,
                            now=self.clock.seconds(), skew=self.skew)
        if not (yield self.sessions.claimNonce(hawk.nonce_key(parsed).encode(),
                                               hawk.nonce_ttl(self.skew))):
            raise hawk.ReplayedNonce("Replayed nonce.")
        return parsed.id
