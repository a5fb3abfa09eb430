"""The HTTP API: the device routes and the backend routes, one Klein app.

Two front doors to one verification state machine: devices speak
msisdn-gateway's protocol with Hawk (L{msisdnd.api.device}), relying
services' servers speak the backend API with API keys
(L{msisdnd.api.backend}).  Both are served by one L{GatewayAPI} on the same
listener and under the same public base URL, and described by one OpenAPI
document.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime

from msisdnd.api.backend import BackendRoutes
from msisdnd.api.device import DeviceRoutes
from msisdnd.api.direct import DirectResource
from msisdnd.api.docs import DocsRoutes
from msisdnd.api.discovery import Discovery
from msisdnd.logs import WarningBudget
from msisdnd.verification import certs
from msisdnd.verification.backend import BackendVerifications
from msisdnd.verification.flows import Verifier
from msisdnd.verification.settings import PublicURL, VerificationSettings


class GatewayAPI(DeviceRoutes, BackendRoutes, DocsRoutes):
    """The Klein app.  C{resource()} is what a C{Site} serves.

    @param health: fires with C{{"carriers": bool, ...}}-style readiness of
        the parts other than Redis (the carriers); C{None} means none to report.
    @param backend: the backend verifications; without them the backend
        routes answer 404.
    @param environment: the deployment's C{[service] environment}
        (C{production}, C{development}, ...), told in the discovery document.
    """

    def __init__(
        self,
        *,
        verifier: Verifier,
        signer: certs.Signer,
        discovery: Discovery,
        texts: Any,
        public_url: PublicURL,
        settings: VerificationSettings,
        clock: IReactorTime,
        cors_origins: tuple[str, ...] = (),
        show_version: bool = True,
        health: Callable[[], dict] | None = None,
        trusted_proxies: tuple = (),
        backend: BackendVerifications | None = None,
        environment: str = "production",
    ):
        self.verifier = verifier
        self.signer = signer
        self.discovery = discovery
        self.texts = texts
        self.public_url = public_url
        self.settings = settings
        self.clock = clock
        #: Storage failures logged at most 10 a minute (a failover fails every request).
        self.store_warnings = WarningBudget(self.log, now=clock.seconds)
        self.cors_origins = frozenset(cors_origins)
        self.show_version = show_version
        self.trusted_proxies = tuple(trusted_proxies)
        self.health = health
        self.backend = backend
        self.environment = environment

    def resource(self) -> DirectResource:
        """The routes' resource: fixed paths found directly, the rest through Klein."""
        return DirectResource(self.app, self.answerFailure)
