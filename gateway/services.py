"""The per-process objects a connection handler needs, bundled once by the app.

Built in :mod:`gateway.app`'s cleanup context and stored under :data:`SERVICES`;
handlers and sessions receive this one object instead of reaching into the app.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.auth import Verifier
from gateway.config import GatewaySettings
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.presence import Presence
from gateway.sessions import Sessions


@dataclass(frozen=True)
class Services:
    settings: GatewaySettings
    verifier: Verifier
    metrics: Metrics
    hub: Hub
    sessions: Sessions
    presence: Presence


SERVICES: web.AppKey[Services] = web.AppKey("pgcast_services", Services)
