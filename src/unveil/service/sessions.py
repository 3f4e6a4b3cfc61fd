"""Signing in to the dashboard: sessions for people, beside the tokens machines use.

A session's secret travels only in its cookie; the database keeps its
SHA-256, like a token's. The CSRF token of a session is derived from its
secret (an HMAC), so it needs no storage and no page can forge it without
the cookie, which scripts cannot read (HttpOnly).

Failed sign-ins slow the next try down: after three failures for a name
from one address, ten from one address, or fifty for a name from anywhere
within a quarter of an hour, each further try of that kind is refused for a
delay that doubles, up to a minute, without checking the password. Someone
who only knows a name cannot keep its user out: the user's own address has
failed nothing (fifty tries a quarter of an hour, from many addresses, would
be needed to slow the name everywhere).
The count lives in the node's memory; with several nodes behind a balancer
each node counts its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from unveil.service.access import Principal, check_password
from unveil.service.errors import Overloaded, Unauthenticated
from unveil.store.unit import Store, UnitOfWork

__all__ = ["SESSION_HOURS", "SessionService", "SignedIn"]

#: How long a session lasts after signing in.
SESSION_HOURS = 12
_FREE_FAILURES = {"pair": 3, "address": 10, "name": 50}
_FAILURE_WINDOW = 15 * 60.0
_MAX_DELAY = 60.0
_MAX_TRACKED = 10_000
_SESSION_CACHE_SECONDS = 2.0
# checked against when the name is unknown, so that an unknown name costs what a wrong
# password costs and timing tells nobody which names exist
_DECOY = "scrypt$" + "00" * 16 + "$" + "00" * 64


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_token(secret: str) -> str:
    """The CSRF token of the session whose cookie holds ``secret``."""
    return hmac.new(secret.encode(), b"unveil-dashboard-csrf", hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: the cookie's secret (shown once) and when it ends."""

    secret: str
    expires_at: datetime


@dataclass
class _Failures:
    count: int = 0
    first: float = 0.0
    blocked_until: float = 0.0


class SessionService:
    """Sign in, recognise and sign out dashboard users."""

    def __init__(self, store: Store, hours: float = SESSION_HOURS) -> None:
        self.store = store
        self.lifetime = timedelta(hours=hours)
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, Principal]] = {}

    def sign_in(self, name: str, password: str, address: str) -> SignedIn:
        """A session for the user; ``Unauthenticated`` for a wrong name or password,
        ``Overloaded`` (with the seconds to wait) while failures slow this name down."""
        keys = (f"pair:{address}|{name}", f"address:{address}", f"name:{name}")
        self._refuse_while_blocked(keys)
        with self.store.reading() as r:
            found = r.users.password_hash(name)
        if found is None or not check_password(password, found[1]):
            if found is None:
                check_password(password, _DECOY)
            self._failed(keys)
            raise Unauthenticated("the name or the password is not right")
        self._succeeded(keys)
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.store.unit_of_work() as work:
            user_id = work.sessions.user_id(name)
            if user_id is None:  # deleted between the two reads
                raise Unauthenticated("the name or the password is not right")
            work.sessions.add(
                user_id=user_id,
                secret_hash=_hash(secret),
                at=now,
                expires_at=now + self.lifetime,
            )
        return SignedIn(secret, now + self.lifetime)

    def authenticate(self, secret: str) -> Principal | None:
        """The user of a live session, as a principal with the user's role."""
        if not secret or len(secret) > 100:
            return None
        key = _hash(secret)
        cached = self._known.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        with self.store.reading() as r:
            row = r.sessions.live(key, datetime.now(UTC))
        if row is None:
            return None
        principal = Principal(row.user, "admin", row.role, None)
        if len(self._known) >= _MAX_TRACKED:
            self._known.clear()
        self._known[key] = (time.monotonic() + _SESSION_CACHE_SECONDS, principal)
        return principal

    def sign_out(self, secret: str) -> None:
        """End the session at once, on this node (and within two seconds on others)."""
        self._known.pop(_hash(secret), None)
        with self.store.unit_of_work() as work:
            work.sessions.end(_hash(secret), datetime.now(UTC))

    @staticmethod
    def forget_old(work: UnitOfWork) -> int:
        """Drop sessions that ended or expired more than a day ago (a recurring job)."""
        return work.sessions.forget_before(datetime.now(UTC) - timedelta(days=1))

    # -- slowing down guesses --------------------------------------------------------

    def _refuse_while_blocked(self, keys: tuple[str, ...]) -> None:
        now = time.monotonic()
        with self._lock:
            wait = max(
                (f.blocked_until - now for k in keys if (f := self._failures.get(k))),
                default=0.0,
            )
        if wait > 0:
            raise Overloaded(
                "too many failed sign-ins: wait before trying again", retry_after=int(wait) + 1
            )

    def _failed(self, keys: tuple[str, ...]) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= _MAX_TRACKED:
                self._failures = {
                    k: f for k, f in self._failures.items() if now - f.first < _FAILURE_WINDOW
                }
            for key in keys:
                failures = self._failures.get(key)
                if failures is None or now - failures.first > _FAILURE_WINDOW:
                    failures = self._failures[key] = _Failures(0, now)
                failures.count += 1
                free = _FREE_FAILURES[key.split(":", 1)[0]]
                if failures.count >= free:
                    delay = min(_MAX_DELAY, 2.0 ** (failures.count - free))
                    failures.blocked_until = now + delay

    def _succeeded(self, keys: tuple[str, ...]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
