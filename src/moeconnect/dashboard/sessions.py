"""Dashboard sessions and CSRF tokens: signed, stateless, and free of the operator token.

Design. Signing in with an operator token looks the token up by its keyed digest
(:meth:`Accounts.authenticate_token`); the token itself is then forgotten. The session cookie
holds only::

    v1.<token id>.<issued at, epoch seconds>.<random session id>.<HMAC-SHA256>

The HMAC is keyed by a key derived from the server secret (never the secret itself), so every
worker and every instance sharing the secret accepts the cookie without a session table, and
nobody can forge or alter one. Each request re-checks that the operator token with that ID is
still active, so revoking the token ends all of its sessions at once; sessions also expire after
:data:`SESSION_LIFETIME`. Signing out deletes the cookie. (A cookie copied before sign-out stays
valid until it expires or its token is revoked: the price of not keeping server-side state.)

CSRF tokens are synchronizer tokens derived from the session: ``HMAC(key, "csrf|" + session id)``.
Before sign-in, a random pre-session cookie plays the session's part for the sign-in form. A
forged cross-site POST carries neither the cookie's session ID nor the matching token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final

__all__ = [
    "SESSION_COOKIE",
    "SESSION_LIFETIME",
    "SIGNIN_COOKIE",
    "Session",
    "SessionSigner",
]

SESSION_COOKIE: Final = "moeconnect_session"
SIGNIN_COOKIE: Final = "moeconnect_signin"
SESSION_LIFETIME: Final = 8 * 3600  # seconds
_VERSION: Final = "v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session: which operator token signed in, when, and the session's own ID."""

    token_id: str
    issued_at: int
    session_id: str


class SessionSigner:
    """Makes and checks session cookies and CSRF tokens with a key derived from the secret."""

    def __init__(self, server_secret: bytes, lifetime: int = SESSION_LIFETIME) -> None:
        self._key = hmac.new(server_secret, b"moeconnect dashboard sessions v1", "sha256").digest()
        self.lifetime = lifetime

    def _mac(self, message: str) -> str:
        return _b64(hmac.new(self._key, message.encode("utf-8"), hashlib.sha256).digest())

    # -- sessions -------------------------------------------------------------------------

    def new_session(self, token_id: str, now: float | None = None) -> tuple[Session, str]:
        """A fresh session for ``token_id`` and the cookie value that carries it."""
        session = Session(token_id, int(time.time() if now is None else now), new_random_id())
        body = f"{_VERSION}.{session.token_id}.{session.issued_at}.{session.session_id}"
        return session, f"{body}.{self._mac(body)}"

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session in ``cookie`` when its signature holds and it has not expired."""
        if not cookie or len(cookie) > 512:
            return None
        parts = cookie.split(".")
        if len(parts) != 5 or parts[0] != _VERSION:
            return None
        body, mac = ".".join(parts[:4]), parts[4]
        if not hmac.compare_digest(self._mac(body), mac):
            return None
        try:
            issued = int(parts[2])
        except ValueError:
            return None
        current = time.time() if now is None else now
        if not issued - 60 <= current < issued + self.lifetime:
            return None
        return Session(parts[1], issued, parts[3])

    # -- CSRF -----------------------------------------------------------------------------

    def csrf_token(self, session_id: str, purpose: str = "csrf") -> str:
        return self._mac(f"{purpose}|{session_id}")

    def csrf_ok(self, session_id: str | None, token: object, purpose: str = "csrf") -> bool:
        if not session_id or not isinstance(token, str) or not token:
            return False
        return hmac.compare_digest(self.csrf_token(session_id, purpose), token)


def new_random_id() -> str:
    """128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)
