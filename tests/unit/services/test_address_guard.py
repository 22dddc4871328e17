"""AddressGuard and GuardedTransport: the hub-mode SSRF rule and the pinned connection.

Names resolve through stub resolvers only, and every connection any test makes goes to a
server of its own on 127.0.0.1: the refusals are shown by a network backend that records
each connect and fails the test on any other address.
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import socket
import socketserver
import ssl
import threading

import httpcore
import httpx
import pytest

from bodhi_nb.objs.errors import InvalidRequestError
from bodhi_nb.services.address_guard import AddressGuard, GuardedTransport, refused_reason, system_resolver

PUBLIC = "93.184.216.34"


def run(coro):
    return asyncio.run(coro)


class StubResolver:
    """Canned answers per host (a list, or a list of lists: one per successive call); records calls."""

    def __init__(self, answers):
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        answer = self.answers[host]
        if answer and isinstance(answer[0], list):
            return answer[min(len(self.calls), len(answer)) - 1]
        return answer


def refusal(guard: AddressGuard, host: str, port: int = 443) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as ei:
        run(guard.check(host, port))
    assert ei.value.param == "base_url" and ei.value.status == 400
    return ei.value


# -- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(("ip", "reason"), [
    (PUBLIC, None), ("2606:4700:4700::1111", None), ("2002:5db8:d822::1", None),  # public, and public 6to4
    ("10.1.2.3", "private"), ("192.168.0.5", "private"), ("172.16.0.1", "private"), ("fc00::1", "private"),
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("169.254.10.10", "link-local"), ("fe80::1", "link-local"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"), ("100.100.100.200", "cloud metadata"),
    ("168.63.129.16", "cloud metadata"),
    ("::ffff:10.0.0.1", "private"), ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "cloud metadata"),
    ("2002:a00:1::", "private"), ("64:ff9b::7f00:1", "loopback"), ("64:ff9b::5db8:d822", None),  # 6to4, NAT64
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("100.64.0.1", "shared address space (100.64.0.0/10)"), ("fec0::1", "site-local"), ("240.0.0.1", "reserved"),
])
def test_refused_reason(ip, reason):
    assert refused_reason(ip) == reason
    assert AddressGuard.refused_reason(ip) == reason


# -- check ---------------------------------------------------------------------------------


def test_a_public_answer_is_allowed_and_returned():
    resolver = StubResolver({"api.example": [PUBLIC]})
    assert run(AddressGuard(resolver=resolver).check("api.example", 443)) == PUBLIC
    assert resolver.calls == [("api.example", 443)]


@pytest.mark.parametrize(("ip", "reason"), [
    ("10.1.2.3", "private"), ("192.168.0.5", "private"), ("172.16.0.1", "private"),
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("169.254.10.10", "link-local"), ("fe80::1", "link-local"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
    ("::ffff:10.0.0.1", "private"), ("0.0.0.0", "unspecified"),
])
def test_a_refused_answer_names_host_address_and_reason(ip, reason):
    err = refusal(AddressGuard(resolver=StubResolver({"evil.test": [ip]})), "evil.test")
    assert f"base_url host 'evil.test' resolves to {ip} ({reason})" in err.message
    assert "allowed_addresses" in err.message


@pytest.mark.parametrize("answer", [[PUBLIC, "10.0.0.7"], ["10.0.0.7", PUBLIC]])
def test_one_private_address_among_public_ones_refuses(answer):
    err = refusal(AddressGuard(resolver=StubResolver({"mixed.test": answer})), "mixed.test")
    assert "resolves to 10.0.0.7 (private)" in err.message


def test_an_empty_answer_is_refused():
    assert "resolves to no address" in refusal(AddressGuard(resolver=StubResolver({"none.test": []})), "none.test").message


def test_an_ip_literal_is_judged_without_a_lookup():
    resolver = StubResolver({})  # any lookup would raise KeyError
    guard = AddressGuard(resolver=resolver)
    assert run(guard.check(PUBLIC, 443)) == PUBLIC
    assert "resolves to ::1 (loopback)" in refusal(guard, "[::1]").message
    assert resolver.calls == []
    assert run(system_resolver("10.0.0.7", 80)) == ["10.0.0.7"]  # the real resolver skips the lookup too


def test_an_allowed_cidr_admits_its_addresses_only():
    resolver = StubResolver({"inner.test": ["10.1.2.3"], "home.test": ["192.168.0.5"], "v6.test": ["::ffff:10.9.9.9"]})
    guard = AddressGuard(allow=["10.0.0.0/8"], resolver=resolver)
    assert run(guard.check("inner.test", 443)) == "10.1.2.3"
    assert run(guard.check("v6.test", 443)) == "10.9.9.9"  # judged, allowed and reached as 10.9.9.9
    assert "192.168.0.5 (private)" in refusal(guard, "home.test").message


def test_a_port_in_an_allow_entry_admits_that_port_only():
    guard = AddressGuard(allow=["127.0.0.1:8000", "[::1]:8000"], resolver=StubResolver({"l.test": ["127.0.0.1", "::1"]}))
    assert run(guard.check("l.test", 8000)) == "127.0.0.1"
    assert "127.0.0.1 (loopback)" in refusal(guard, "l.test", 8001).message


def test_a_host_name_entry_admits_what_that_name_resolves_to():
    resolver = StubResolver({"llm.internal": ["10.2.3.4", "fd12::4"], "other.test": ["10.2.3.4"]})
    guard = AddressGuard(allow=["LLM.Internal."], resolver=resolver)
    assert run(guard.check("llm.internal", 443)) == "10.2.3.4"
    assert run(guard.check("LLM.INTERNAL.", 443)) == "10.2.3.4"
    assert resolver.calls[-1] == ("llm.internal", 443)  # looked up normalised
    assert "10.2.3.4 (private)" in refusal(guard, "other.test").message  # the name is allowed, not the address


def test_a_host_name_entry_with_a_port():
    guard = AddressGuard(allow=["llm.internal:8000"], resolver=StubResolver({"llm.internal": ["10.2.3.4"]}))
    assert run(guard.check("llm.internal", 8000)) == "10.2.3.4"
    assert "10.2.3.4 (private)" in refusal(guard, "llm.internal", 443).message


def test_trusted_pairs_are_admitted_exactly_and_asked_at_every_check():
    port = [5555]
    guard = AddressGuard(resolver=StubResolver({}), trusted=lambda: [("127.0.0.1", port[0])])
    assert run(guard.check("127.0.0.1", 5555)) == "127.0.0.1"
    assert "loopback" in refusal(guard, "127.0.0.1", 5556).message
    port[0] = 5556  # the engine restarted on another port
    assert run(guard.check("127.0.0.1", 5556)) == "127.0.0.1"
    assert "loopback" in refusal(guard, "127.0.0.1", 5555).message


@pytest.mark.parametrize(("entry", "words"), [
    ("10.0.0.1/8", "has host bits set"), ("127.0.0.1:99999", "1 to 65535"), ("127.0.0.1:x", "not a number"),
    ("not a host!", "not an IP address"), ("", "empty address"), ("[::1", "[address]:port"),
    ("http://llm.test", "not a number"), ("300.1.1.1", "300.1.1.1"), ("10.0.0.0/33", "10.0.0.0/33"),
])
def test_a_bad_allow_entry_fails_at_construction(entry, words):
    with pytest.raises(ValueError, match="invalid allowed_addresses entry") as ei:
        AddressGuard(allow=["10.0.0.0/8", entry])
    assert words in str(ei.value)


def test_system_resolver_asks_the_loops_getaddrinfo_for_stream_sockets(monkeypatch):
    asked = []

    async def getaddrinfo(self, host, port, **kwargs):
        asked.append((host, port, kwargs))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::1", port, 0, 0))]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    assert run(system_resolver("llm.test", 443)) == ["10.0.0.1", "fd00::1"]
    assert asked == [("llm.test", 443, {"type": socket.SOCK_STREAM})]


def test_check_url_uses_the_scheme_default_port():
    resolver = StubResolver({"api.example": [PUBLIC]})
    guard = AddressGuard(resolver=resolver)
    run(guard.check_url("https://api.example/v1"))
    run(guard.check_url("http://API.example/v1"))
    run(guard.check_url("https://api.example:8443/v1"))
    assert resolver.calls == [("api.example", 443), ("api.example", 80), ("api.example", 8443)]
    for bad in ("ftp://api.example/", "https://sk-secret@/v1", "http://[::1/"):
        with pytest.raises(InvalidRequestError, match="not an http") as ei:
            run(guard.check_url(bad))
        assert "secret" not in ei.value.message


# -- the transport: a server on 127.0.0.1 and a backend that watches every connect ----------


class Recorder(http.server.ThreadingHTTPServer):
    """A keep-alive HTTP/1.1 server on 127.0.0.1 recording each request's Host header and
    client port (one port per connection), and with TLS each connection's SNI name."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.seen: list[tuple[str, str, int]] = []
        self.sni: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                server.seen.append((self.path, self.headers["Host"], self.client_address[1]))
                body = b'{"data": []}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def server_bind(self):
        """HTTPServer's own does a reverse lookup (socket.getfqdn) of the address: skip it."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class WatchingBackend(httpcore.AsyncNetworkBackend):
    """httpx's own backend on asyncio (AnyIOBackend), recording every connect_tcp and failing
    the test before any connection to an address other than 127.0.0.1 is attempted."""

    def __init__(self):
        self.inner = httpcore.AnyIOBackend()
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.connects.append((host, port))
        if host != "127.0.0.1":
            pytest.fail(f"a connection to {host}:{port} was attempted")
        return await self.inner.connect_tcp(host, port, timeout=timeout, local_address=local_address,
                                            socket_options=socket_options)

    async def sleep(self, seconds):
        await self.inner.sleep(seconds)


def watched_transport() -> tuple[httpx.AsyncHTTPTransport, WatchingBackend]:
    """An AsyncHTTPTransport whose connections go through a WatchingBackend. httpx's transport
    takes no network_backend argument; it keeps its httpcore.AsyncConnectionPool in `_pool`, and
    the pool hands its `_network_backend` to every connection it makes (httpx 0.28 / httpcore 1.0)."""
    transport, backend = httpx.AsyncHTTPTransport(trust_env=False), WatchingBackend()
    transport._pool._network_backend = backend
    return transport, backend


async def get(transport: httpx.AsyncBaseTransport, *urls: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        return [await client.get(u) for u in urls]


class CapturingTransport(httpx.AsyncBaseTransport):
    """An inner transport that sends nothing: it keeps the request it was handed."""

    def __init__(self):
        self.requests: list[httpx.Request] = []
        self.closed = False

    async def handle_async_request(self, request):
        self.requests.append(request)
        return httpx.Response(200, json={"data": []})

    async def aclose(self):
        self.closed = True


@pytest.mark.parametrize(("url", "answer", "pinned", "sni"), [
    ("https://v6.test:8443/v1/models?x=1", "::1", "https://[::1]:8443/v1/models?x=1", "v6.test"),
    ("https://LLM.test./v1/models", "127.0.0.1", "https://127.0.0.1/v1/models", "llm.test"),
    ("http://llm.test:8080/v1/models", "127.0.0.1", "http://127.0.0.1:8080/v1/models", None),
])
def test_the_inner_transport_gets_the_address_the_name_in_host_and_sni(url, answer, pinned, sni):
    inner = CapturingTransport()
    guard = AddressGuard(allow=[answer], resolver=StubResolver({"v6.test": [answer], "llm.test": [answer]}))
    transport = GuardedTransport(guard, inner=inner)
    (r,) = run(get(transport, url))
    (sent,) = inner.requests
    assert str(sent.url) == pinned
    assert sent.headers["Host"] == httpx.URL(url).netloc.decode()
    assert sent.extensions.get("sni_hostname") == sni
    assert r.request.url == httpx.URL(url)  # the caller's request is not rewritten
    assert inner.closed  # the client's close closed the inner transport


def test_the_request_goes_to_the_checked_address_with_the_name_in_host_and_one_lookup():
    resolver = StubResolver({"llm.test": ["127.0.0.1"]})
    guard = AddressGuard(allow=["127.0.0.1"], resolver=resolver)
    with Recorder() as server:
        (r,) = run(get(GuardedTransport(guard, trust_env=False), f"http://llm.test:{server.port}/v1/models"))
    assert r.status_code == 200 and r.json() == {"data": []}
    assert [(path, host) for path, host, _ in server.seen] == [("/v1/models", f"llm.test:{server.port}")]
    assert resolver.calls == [("llm.test", server.port)]
    assert r.request.url.host == "llm.test"  # the caller's request keeps the name


def test_the_watching_backend_sees_the_pinned_connect():
    transport, backend = watched_transport()
    guard = AddressGuard(allow=["127.0.0.1"], resolver=StubResolver({"llm.test": ["127.0.0.1"]}))
    with Recorder() as server:
        (r,) = run(get(GuardedTransport(guard, inner=transport), f"http://llm.test:{server.port}/v1/models"))
    assert r.status_code == 200
    assert backend.connects == [("127.0.0.1", server.port)]
    assert server.seen[0][1] == f"llm.test:{server.port}"


@pytest.mark.parametrize("answer", [["10.0.0.7"], [PUBLIC, "10.0.0.7"]])
def test_a_refused_host_connects_nowhere(answer):
    transport, backend = watched_transport()
    guard = AddressGuard(resolver=StubResolver({"evil.test": answer}))
    with pytest.raises(InvalidRequestError, match=r"'evil.test' resolves to 10\.0\.0\.7 \(private\)"):
        run(get(GuardedTransport(guard, inner=transport), "http://evil.test:8080/v1/models"))
    assert backend.connects == []


def test_dns_rebinding_cannot_swap_the_checked_address():
    transport, backend = watched_transport()
    resolver = StubResolver({"rebind.test": [["127.0.0.1"], ["10.0.0.9"]]})  # first answer, then every later one
    guard = AddressGuard(allow=["127.0.0.1"], resolver=resolver)
    with Recorder() as server:
        url = f"http://rebind.test:{server.port}/v1/models"
        (r,) = run(get(GuardedTransport(guard, inner=transport), url))
        assert r.status_code == 200
        assert len(resolver.calls) == 1 and backend.connects == [("127.0.0.1", server.port)]
        with pytest.raises(InvalidRequestError, match=r"10\.0\.0\.9 \(private\)"):  # the next request checks anew
            run(get(GuardedTransport(guard, inner=transport), url))
    assert len(resolver.calls) == 2 and backend.connects == [("127.0.0.1", server.port)]


def test_a_failed_or_slow_lookup_is_an_httpx_connect_error():
    async def missing(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def slow(host, port):
        await asyncio.sleep(5)
        return ["127.0.0.1"]

    with pytest.raises(httpx.ConnectError, match="could not resolve missing.test"):
        run(get(GuardedTransport(AddressGuard(resolver=missing), trust_env=False), "http://missing.test/"))

    async def slow_get():
        async with httpx.AsyncClient(transport=GuardedTransport(AddressGuard(resolver=slow), trust_env=False),
                                     timeout=httpx.Timeout(5, connect=0.05)) as client:
            await client.get("http://slow.test/")

    with pytest.raises(httpx.ConnectTimeout, match="resolving slow.test timed out"):
        run(slow_get())


def test_a_proxy_or_unix_socket_is_refused():
    for kwargs in ({"proxy": "http://127.0.0.1:3128"}, {"uds": "/tmp/x.sock"}):
        with pytest.raises(ValueError, match="no proxy or uds"):
            GuardedTransport(AddressGuard(), **kwargs)


# -- https: the name is verified, and one name never reuses another's connection ------------


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory):
    """A server context with a self-signed certificate for llm.test, other.test and third.test (no IP in
    it, so a handshake verified against 127.0.0.1 fails), and a client context trusting it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llm.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("llm.test"), x509.DNSName("other.test"), x509.DNSName("third.test")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))

    def server_ctx():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
        return ctx

    return server_ctx, ssl.create_default_context(cafile=str(d / "cert.pem"))


def https_guard() -> AddressGuard:
    return AddressGuard(allow=["127.0.0.1"], resolver=StubResolver({"llm.test": ["127.0.0.1"], "other.test": ["127.0.0.1"],
                                                                   "third.test": ["127.0.0.1"]}))


def test_https_verifies_the_name_and_keeps_one_pool_per_name(tls_pair):
    server_ctx, client_ctx = tls_pair
    with Recorder(server_ctx()) as server:
        base = f":{server.port}/v1/models"
        rs = run(get(GuardedTransport(https_guard(), verify=client_ctx, trust_env=False),
                     f"https://llm.test{base}", f"https://llm.test{base}", f"https://other.test{base}"))
    assert [r.status_code for r in rs] == [200, 200, 200]
    assert server.sni == ["llm.test", "other.test"]  # TLS was done (and verified) for the name
    hosts = [host for _, host, _ in server.seen]
    assert hosts == [f"llm.test:{server.port}"] * 2 + [f"other.test:{server.port}"]
    ports = [p for _, _, p in server.seen]
    assert ports[0] == ports[1] != ports[2]  # llm.test reused its connection; other.test did not


def test_https_without_the_name_fails_verification(tls_pair):
    """The control for the test above: a plain request to the address fails the handshake."""
    server_ctx, client_ctx = tls_pair
    with Recorder(server_ctx()) as server, pytest.raises(httpx.ConnectError, match="certificate"):
        run(get(httpx.AsyncHTTPTransport(verify=client_ctx, trust_env=False), f"https://127.0.0.1:{server.port}/"))


def test_idle_pools_beyond_max_pools_close_busy_ones_stay(tls_pair):
    server_ctx, client_ctx = tls_pair

    async def go(port):
        transport = GuardedTransport(https_guard(), max_pools=1, verify=client_ctx, trust_env=False)
        async with httpx.AsyncClient(transport=transport) as client:
            busy = await client.send(client.build_request("GET", f"https://llm.test:{port}/a"), stream=True)
            await client.get(f"https://other.test:{port}/b")  # llm.test is streaming: its pool stays
            assert (await busy.aread()) == b'{"data": []}'
            await busy.aclose()
            await client.get(f"https://llm.test:{port}/c")  # its pool survived: the same connection
            await client.get(f"https://third.test:{port}/d")  # a new name at the limit: the idle two close
            await client.get(f"https://llm.test:{port}/e")  # so llm.test connects again

    with Recorder(server_ctx()) as server:
        run(go(server.port))
    assert server.sni == ["llm.test", "other.test", "third.test", "llm.test"]
    assert [path for path, _, _ in server.seen] == ["/a", "/b", "/c", "/d", "/e"]


def test_addresses_in_messages_are_canonical():
    err = refusal(AddressGuard(resolver=StubResolver({"x.test": ["0:0:0:0:0:0:0:1"]})), "x.test")
    assert f"resolves to {ipaddress.ip_address('::1')} (loopback)" in err.message
