"""Who is asking: Hawk for device requests, API keys for backend ones.

L{HawkAuthenticator.authenticate} runs the steps L{msisdnd.hawk} lays out:
parse the header (no I/O), fetch the session's Hawk key (cached for a
while), check the MAC, the payload hash and the clock, and only then hand
the request's nonce on, so a stranger's junk never costs a write.  The
nonce is claimed in Redis by the first script of the request's step (the
L{Authenticated} request carries it there; L{msisdnd.state.lua}), not in a
round trip of its own; this daemon also remembers the nonces it accepted.

L{ApiKeyAuthenticator.authenticate} reads C{Authorization: Bearer <key id>.<secret>},
fetches the key's record (never cached: a revocation takes effect at once
on every daemon), compares the HMAC of the secret in constant time, and only
then spends the key's rate (and budget) in Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from twisted.internet.defer import Deferred, execute, fail, inlineCallbacks
from twisted.internet.interfaces import IReactorTime

from msisdnd import hawk
from msisdnd.state.api_keys import Admission, ApiKeyRecord, ApiKeys
from msisdnd.state.limits import Limit, Refused
from msisdnd.state.sessions import Nonce, SessionStore
from msisdnd.verification import codes
from msisdnd.verification.errors import InvalidApiKey

#: How long, and for how many sessions, a daemon keeps Hawk keys it fetched.
KEY_CACHE_SECONDS = 60.0
KEY_CACHE_SIZE = 50_000
#: How many nonces a daemon remembers itself (besides Redis), at most.
NONCE_CACHE_SIZE = 200_000


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A device request whose Hawk header checked out.

    @ivar id: the session's Hawk id.
    @ivar nonce: the request's nonce, not yet claimed in Redis: the step the
        request asks for claims it in its first script, and fails with
        L{hawk.ReplayedNonce} if it was claimed already.
    """

    id: str
    nonce: Nonce


class HawkAuthenticator:
    """Checks Hawk headers against the sessions in the store.

    @param session_secret: keys the HMAC a session is stored under.
    @param skew: how far a client's clock may be from ours, in seconds.
    @param require_payload_hash: refuse a request with a body and no payload
        hash (C{False} only for legacy clients: their bodies are then not
        authenticated).
    """

    def __init__(self, sessions: SessionStore, session_secret: bytes, skew: float,
                 clock: IReactorTime, require_payload_hash: bool = True):
        self.sessions = sessions
        self.session_secret = session_secret
        self.skew = skew
        self.clock = clock
        self.require_payload_hash = require_payload_hash
        self._keys: dict[str, tuple[str, float]] = {}
        #: Nonces this daemon accepted, oldest first, until they are out of the
        #: skew window: a Redis restored from a snapshot forgets nonces, and
        #: this daemon then still refuses a request it already served.
        self._nonces: OrderedDict[str, float] = OrderedDict()

    def _seen(self, nonce: str) -> bool:
        """Remember C{nonce} for twice the skew; C{True} if it was remembered."""
        now = self.clock.seconds()
        nonces = self._nonces
        while nonces and (next(iter(nonces.values())) <= now or len(nonces) >= NONCE_CACHE_SIZE):
            nonces.popitem(last=False)
        if nonces.get(nonce, 0.0) > now:
            return True
        nonces[nonce] = now + 2 * self.skew
        return False

    def _fetchKey(self, hawk_id: str) -> Deferred:
        """Fires with the session's Hawk key (hex, as clients use it) from the
        store, or C{None}.

        Keys are cached for L{KEY_CACHE_SECONDS} (L{_cachedKey}): a key never
        changes, and a session dropped meanwhile (on any daemon) is still
        refused, since every step after authentication reads the session itself.
        """

        def found(raw: bytes | None) -> str | None:
            if not raw:
                return None
            key = raw.hex()
            self.remember(hawk_id, key)
            return key

        ref = codes.session_ref(self.session_secret, hawk_id)
        return self.sessions.hawkKey(ref).addCallback(found)

    def _cachedKey(self, hawk_id: str) -> str | None:
        cached = self._keys.get(hawk_id)
        if cached is not None and cached[1] > self.clock.seconds():
            return cached[0]
        return None

    def remember(self, hawk_id: str, key: str) -> None:
        """Cache a session's Hawk key (hex) for L{KEY_CACHE_SECONDS}: one it
        fetched, or one this daemon just registered (so the session's first
        request here fetches nothing)."""
        if len(self._keys) >= KEY_CACHE_SIZE:
            self._keys.pop(next(iter(self._keys)))
        self._keys[hawk_id] = (key, self.clock.seconds() + KEY_CACHE_SECONDS)

    def forget(self, hawk_id: str) -> None:
        """Drop a session's cached key (it was unregistered here)."""
        self._keys.pop(hawk_id, None)

    def authenticate(self, authorization: str | None, *, method: str, url: str, content: bytes,
                     content_type: str) -> Deferred:
        """Fires with the L{Authenticated} request once the MAC, the payload
        hash and the clock check out, and this daemon has not seen its nonce;
        fails with a L{hawk.HawkError} (the subclass says why: 400 or 401).

        The nonce is not claimed in Redis here: the request's step does it in
        its first script (see L{Authenticated}).  With the session's key
        cached, the Deferred has fired when this returns.

        @param url: the URL the client signed, rebuilt from the configured
            public URL (never from the Host header).
        """
        try:
            parsed = hawk.parse_header(authorization)
        except hawk.HawkError:
            return fail()
        key = self._cachedKey(parsed.id)
        if key is not None:
            return execute(self._check, key, parsed, method, url, content, content_type)
        return self._fetchKey(parsed.id).addCallback(self._check, parsed, method, url, content,
                                                     content_type)

    def _check(self, key: str | None, parsed: hawk.ParsedHeader, method: str, url: str,
               content: bytes, content_type: str) -> Authenticated:
        if key is None:
            raise hawk.UnknownSession("Unknown session.")
        hawk.verify_request(parsed, hawk.HawkCredentials(parsed.id, key), method=method, url=url,
                            content=content, content_type=content_type,
                            now=self.clock.seconds(), skew=self.skew,
                            require_hash=self.require_payload_hash)
        nonce = hawk.nonce_key(parsed)
        if self._seen(nonce):
            raise hawk.ReplayedNonce("Replayed nonce.")
        return Authenticated(parsed.id, Nonce(nonce.encode(), hawk.nonce_ttl(self.skew)))


_API_KEY = re.compile(r"([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")


def new_api_key() -> tuple[str, str]:
    """A new key's id and secret: the key a backend sends is C{f"{id}.{secret}"}."""
    return secrets.token_hex(8), secrets.token_urlsafe(32)


def api_key_mac(server_secret: bytes, secret: str) -> bytes:
    """The stored form of an API key's secret."""
    return hmac.new(server_secret, secret.encode("ascii"), hashlib.sha256).digest()


class ApiKeyAuthenticator:
    """Checks C{Authorization: Bearer} API keys against their records.

    @param server_secret: keys the HMAC of the secrets (L{api_key_mac}).
    """

    def __init__(self, keys: ApiKeys, server_secret: bytes, clock: IReactorTime):
        self.keys = keys
        self.server_secret = server_secret
        self.clock = clock

    @inlineCallbacks
    def authenticate(self, authorization: str | None, *, sends: int = 0):
        """Fires with the key's L{ApiKeyRecord} once it checks out and its rate
        (and C{sends} of its daily budget) allows the request.

        @raise InvalidApiKey: missing, malformed, unknown, expired or revoked.
        @raise Refused: the key's rate (L{Limit.API_KEY_RATE}) or daily budget
            (L{Limit.API_KEY_BUDGET}) is spent.
        """
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            raise InvalidApiKey("Missing API key (Authorization: Bearer <key>).")
        match = _API_KEY.fullmatch(credentials.strip())
        if match is None:
            raise InvalidApiKey("Malformed API key.")
        key_id, secret = match.groups()
        record = yield self.keys.get(key_id)
        mac = api_key_mac(self.server_secret, secret)
        if record is None or not hmac.compare_digest(mac, record.mac):
            raise InvalidApiKey("Unknown API key.")
        now_ms = int(self.clock.seconds() * 1000)
        if record.expired(now_ms):
            raise InvalidApiKey("This API key has expired.")
        admission, retry_ms = yield self.keys.admit(record, now_ms, sends)
        if admission is Admission.REVOKED:
            raise InvalidApiKey("Unknown API key.")
        if admission is Admission.RATE:
            raise Refused(Limit.API_KEY_RATE, retry_ms / 1000)
        if admission is Admission.BUDGET:
            raise Refused(Limit.API_KEY_BUDGET, retry_ms / 1000)
        return record

    def refund(self, record: ApiKeyRecord, sends: int = 1) -> Deferred:
        """Give back budget spent for an SMS that was not sent."""
        return self.keys.refund(record, int(self.clock.seconds() * 1000), sends)
