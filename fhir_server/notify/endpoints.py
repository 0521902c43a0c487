"""Which rest-hook endpoints the server may call: protection against server-side request forgery.

A Subscription names a URL that the server then calls on its own. Unchecked, anyone allowed to
subscribe could make it reach its own ports, the database, a cloud metadata service
(169.254.169.254) or the hospital's internal network.

`FHIR_SUBSCRIPTION_ENDPOINTS`, entries separated by commas or spaces:

    (unset or empty)                  any http(s) endpoint whose host resolves to public addresses only
    https://hooks.example.org/espace  that scheme, host, port and path prefix
    hooks.example.org  or  host:8443  that host, any path (any port unless one is given)
    *.example.org                     its subdomains
    127.0.0.1                         e.g. the local receiver of the tests
    *                                 any http(s) endpoint (development only)

With entries, only endpoints matching one are accepted, wherever they resolve: the operator
vouches for them (an internal gateway may well be on a private address). Without, loopback,
private, link-local, multicast and reserved addresses are refused. Only http and https are ever
called.

The policy is checked when a Subscription is created or its endpoint changes, and again before
each delivery, since DNS may have changed: the host is resolved, the addresses checked, and the
connection made to the checked address itself (no second look-up that a rebinding DNS server
could answer differently).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

ENVIRONMENT_VARIABLE = "FHIR_SUBSCRIPTION_ENDPOINTS"
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

Resolver = Callable[[str, int], list[str]]


class EndpointRefused(ValueError):
    """The endpoint may not be called; the message says why."""


def resolve(host: str, port: int) -> list[str]:
    """The addresses of `host` (socket.gaierror when it does not resolve)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(sockaddr[0] for *_, sockaddr in found))


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])          # without an IPv6 zone index
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped                                      # ::ffff:127.0.0.1 is loopback
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Target:
    """What matters of an endpoint URL to decide whether it may be called."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def of(cls, url: str) -> Target:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise EndpointRefused(f"{url!r} is not a valid URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES or not parts.hostname:
            raise EndpointRefused(f"{url!r}: a rest-hook endpoint must be an http or https URL with a host")
        return cls(scheme, _host(parts.hostname), port or DEFAULT_PORTS[scheme], parts.path or "/")


@dataclass(frozen=True)
class AllowEntry:
    """One entry of the allow-list (see the module documentation)."""

    host: str                   # "*" for any host, "*.example.org" for subdomains
    port: int | None            # None: any port (host entries), or the scheme's default (URL entries)
    scheme: str | None = None   # None: http or https
    path: str = ""              # path prefix ("" for any)

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        if text == "*":
            return cls("*", None)
        if "://" in text:
            target = Target.of(text)
            return cls(target.host, target.port, target.scheme, target.path.rstrip("/"))
        host, port = _host_and_port(text)
        return cls(host, port)

    def matches(self, target: Target) -> bool:
        if self.scheme is not None and self.scheme != target.scheme:
            return False
        if self.port is not None and self.port != target.port:
            return False
        return _host_matches(self.host, target.host) and _path_matches(self.path, target.path)


@dataclass(frozen=True)
class EndpointPolicy:
    allowed: tuple[AllowEntry, ...] = ()
    resolver: Resolver = field(default=resolve, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str | None, resolver: Resolver = resolve) -> EndpointPolicy:
        """The policy of a `FHIR_SUBSCRIPTION_ENDPOINTS` value (ValueError on a malformed entry)."""
        entries = []
        for item in re.split(r"[,\s]+", text or ""):
            if item:
                try:
                    entries.append(AllowEntry.parse(item))
                except ValueError as exc:
                    raise ValueError(f"{ENVIRONMENT_VARIABLE}: {item!r} is not a URL prefix or a host: {exc}") \
                        from None
        return cls(tuple(entries), resolver)

    @classmethod
    def from_environment(cls) -> EndpointPolicy:
        return cls.parse(os.environ.get(ENVIRONMENT_VARIABLE))

    def check(self, url: str) -> None:
        """When a Subscription is written: EndpointRefused unless `url` may be called. A host that
        does not resolve (yet) is accepted: each delivery checks again."""
        target, vouched = self._screen(url)
        if vouched:
            return
        try:
            self._public_addresses(target)
        except OSError:
            return

    def address_for(self, url: str) -> str:
        """Before a delivery: the checked address to connect to. EndpointRefused when the policy
        refuses the endpoint, OSError when its host does not resolve."""
        target, vouched = self._screen(url)
        return (self._addresses(target) if vouched else self._public_addresses(target))[0]

    def _screen(self, url: str) -> tuple[Target, bool]:
        """The endpoint's target, and whether an allow-list entry vouches for it (its addresses
        are then not checked). EndpointRefused when the allow-list does not name it."""
        target = Target.of(url)
        if not self.allowed:
            return target, False
        if any(entry.matches(target) for entry in self.allowed):
            return target, True
        raise EndpointRefused(f"{url} is not among the endpoints this server may call ({ENVIRONMENT_VARIABLE})")

    def _addresses(self, target: Target) -> list[str]:
        if _is_address(target.host):
            return [target.host]
        addresses = self.resolver(target.host, target.port)
        if not addresses:
            raise OSError(f"{target.host} has no address")
        return addresses

    def _public_addresses(self, target: Target) -> list[str]:
        addresses = self._addresses(target)
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise EndpointRefused(f"{target.host} is at {', '.join(refused)}: loopback, private, link-local and "
                                  f"reserved addresses are not called (an operator may allow an endpoint explicitly "
                                  f"with {ENVIRONMENT_VARIABLE})")
        return addresses


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host(hostname: str) -> str:
    return hostname.lower().rstrip(".")


def _host_and_port(text: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{text}")
    if not parts.hostname or parts.path or parts.query or parts.fragment or parts.username:
        raise ValueError("expected host, host:port, [v6 address]:port or *.domain")
    return _host(parts.hostname), parts.port


def _host_matches(pattern: str, host: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _path_matches(prefix: str, path: str) -> bool:
    """Whole path segments only: /espace allows /espace and /espace/x, not /espace-evil."""
    return not prefix or path == prefix or path.startswith(prefix + "/")
