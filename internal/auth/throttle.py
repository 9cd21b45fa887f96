"""Throttling of password guesses: token buckets per user name and per client address, in a table
of bounded size.

A bucket holds up to `burst` tokens and gains one every `interval` seconds; an attempt takes a
token, and a successful one gives it back, so only failures are limited. With no token left the
attempt is refused before any password is hashed, with the seconds until the next token.

Bounded memory: each table keeps at most `capacity` buckets (least recently used first out) and
keys are cut to KEY_LENGTH characters, so an attacker cycling through made-up user names or
addresses costs at most capacity x (bucket + key) bytes. Evicting a bucket forgets its debt, but
a name under attack is touched by every guess and so stays at the recent end: to push it out,
more than `capacity` other keys must be tried between two guesses, which the per-address bucket
prevents from any one address (see docs/security.md for the arithmetic).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

KEY_LENGTH = 64  # longer than any valid user name (63) and any address


@dataclass(frozen=True)
class Limit:
    burst: int  # attempts allowed at once; 0 switches the limit off
    interval: float  # seconds per attempt regained


class Buckets:
    """Token buckets by key; at most `capacity` of them."""

    def __init__(self, limit: Limit, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        if limit.burst < 0 or limit.interval <= 0 or capacity < 1:
            raise ValueError("a throttle needs burst >= 0, interval > 0 and capacity >= 1")
        self.limit = limit
        self.capacity = capacity
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, as of)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.limit.burst), now))
        return min(float(self.limit.burst), tokens + (now - at) / self.limit.interval)

    def take(self, key: str) -> float:
        """Take a token: 0.0 when taken, else the seconds until one is there."""
        if self.limit.burst == 0:
            return 0.0
        key = key[:KEY_LENGTH]
        now = self.clock()
        tokens = self._tokens(key, now)
        if tokens < 1:
            self._buckets.move_to_end(key)  # a key under attack stays at the recent end
            return (1 - tokens) * self.limit.interval
        self._buckets[key] = (tokens - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)
        return 0.0

    def give_back(self, key: str) -> None:
        key = key[:KEY_LENGTH]
        if key in self._buckets:
            now = self.clock()
            self._buckets[key] = (min(float(self.limit.burst), self._tokens(key, now) + 1), now)


def client_address(peer: str) -> str:
    """The part of a gRPC peer ("ipv4:10.0.0.1:5000", "ipv6:[2001:db8::1]:5000", "unix:...")
    that identifies a client: the IPv4 address, the IPv6 /64 network (one host usually has a
    whole /64 to pick from), or "unix" for every caller of a unix socket."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]") or rest
        try:
            return str(ipaddress.IPv6Network(f"{host}/64", strict=False))
        except ValueError:
            return host
    return kind or peer


class LoginThrottle:
    """Password attempts, per user name and per client address."""

    def __init__(
        self, per_user: Limit, per_client: Limit, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.users = Buckets(per_user, capacity, clock)
        self.clients = Buckets(per_client, capacity, clock)

    def attempt(self, username: str, peer: str) -> tuple[float, str]:
        """(0.0, "") when the attempt may go on; else (seconds to wait, what is throttled)."""
        client = client_address(peer)
        if wait := self.clients.take(client):
            return wait, "this client"
        if wait := self.users.take(username):
            self.clients.give_back(client)
            return wait, "this user name"
        return 0.0, ""

    def succeeded(self, username: str, peer: str) -> None:
        self.clients.give_back(client_address(peer))
        self.users.give_back(username)
