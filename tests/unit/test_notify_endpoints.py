"""The rest-hook endpoint policy (SSRF protection), without network: resolvers are stand-ins."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fhir_server.notify.channels import rest_hook
from fhir_server.notify.endpoints import EndpointPolicy, EndpointRefused, is_public

PUBLIC = "93.184.216.34"


def answering(addresses: dict[str, list[str]]):
    def resolver(host: str, port: int) -> list[str]:
        if host not in addresses:
            raise socket.gaierror(f"{host} does not resolve")
        return addresses[host]
    return resolver


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "fd00::1",
                                     "::ffff:127.0.0.1"])
def test_non_public_addresses(address):
    assert not is_public(address)


def test_public_addresses():
    assert is_public(PUBLIC) and is_public("2606:4700::1111")


def test_by_default_only_http_endpoints_on_public_addresses_are_called():
    policy = EndpointPolicy.parse("", answering({"hooks.example.org": [PUBLIC], "intranet.example.org": ["10.0.0.5"],
                                                 "mixed.example.org": [PUBLIC, "127.0.0.1"]}))
    policy.check("https://hooks.example.org/fhir")
    assert policy.address_for("https://hooks.example.org/fhir") == PUBLIC
    for refused in ("http://127.0.0.1:8080/hook", "http://[::1]/hook", "http://169.254.169.254/latest/meta-data",
                    "https://intranet.example.org/hook", "https://mixed.example.org/hook", "ftp://hooks.example.org/x",
                    "file:///etc/passwd", "http:///no-host"):
        with pytest.raises(EndpointRefused):
            policy.check(refused)


def test_a_host_that_does_not_resolve_yet_is_accepted_then_checked_at_each_delivery():
    policy = EndpointPolicy.parse("", answering({}))
    policy.check("https://not-yet.example.org/hook")
    with pytest.raises(OSError):
        policy.address_for("https://not-yet.example.org/hook")


def test_an_allow_list_names_the_only_endpoints_called_wherever_they_resolve():
    policy = EndpointPolicy.parse("https://hooks.example.org/espace, 127.0.0.1  *.partner.fr,gw.internal:8443",
                                  answering({"hooks.example.org": [PUBLIC], "gw.internal": ["10.0.0.7"],
                                             "a.b.partner.fr": ["192.168.0.3"], "127.0.0.1": ["127.0.0.1"]}))
    for allowed in ("https://hooks.example.org/espace", "https://hooks.example.org/espace/Patient/1",
                    "https://HOOKS.example.org:443/espace/x", "http://127.0.0.1:40123/hook", "https://a.b.partner.fr/x",
                    "https://gw.internal:8443/hook"):
        policy.check(allowed)
    assert policy.address_for("https://gw.internal:8443/hook") == "10.0.0.7"
    for refused in ("http://hooks.example.org/espace", "https://hooks.example.org:8443/espace",
                    "https://hooks.example.org/espace-evil", "https://hooks.example.org/other",
                    "http://127.0.0.1.evil.org/hook", "https://partner.fr/x", "https://gw.internal/hook",
                    "https://elsewhere.example.org/"):
        with pytest.raises(EndpointRefused):
            policy.check(refused)


def test_star_allows_any_http_endpoint_but_never_another_scheme():
    policy = EndpointPolicy.parse("*", answering({"localhost": ["127.0.0.1"]}))
    assert policy.address_for("http://localhost:9/hook") == "127.0.0.1"
    with pytest.raises(EndpointRefused):
        policy.check("gopher://localhost/")


@pytest.mark.parametrize("entry", ["http://", "host/path", "user@host", "host:port"])
def test_a_malformed_allow_list_entry_is_an_error(entry):
    with pytest.raises(ValueError, match="FHIR_SUBSCRIPTION_ENDPOINTS"):
        EndpointPolicy.parse(entry)


class _Recorder(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_POST(self) -> None:
        self.hosts.append(self.headers["Host"])
        self.send_response(302)
        self.send_header("Location", "http://169.254.169.254/latest/meta-data")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def local_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


def test_delivery_connects_to_the_checked_address_and_does_not_follow_redirects(local_server):
    # the name resolves, for the delivery, to the address the policy checked: no second look-up
    policy = EndpointPolicy.parse("hooks.example.test", answering({"hooks.example.test": ["127.0.0.1"]}))
    _Recorder.hosts = []
    outcome = rest_hook({"endpoint": f"http://hooks.example.test:{local_server}/hook"}, None, 5.0, policy)
    assert _Recorder.hosts == [f"hooks.example.test:{local_server}"]
    assert (outcome.ok, outcome.status, outcome.refused) == (False, 302, False)


def test_delivery_to_an_endpoint_that_now_resolves_to_a_private_address_is_refused(local_server):
    policy = EndpointPolicy.parse("", answering({"hooks.example.test": ["127.0.0.1"]}))
    _Recorder.hosts = []
    outcome = rest_hook({"endpoint": f"http://hooks.example.test:{local_server}/hook"}, None, 5.0, policy)
    assert outcome.refused and not outcome.ok
    assert "127.0.0.1" in outcome.error
    assert _Recorder.hosts == []                          # never connected
