"""WAN links on the real toxiproxy (built by `corral build --all`): latency, partitions, resets, bandwidth.

Timing checks are lower bounds only: a link must add at least the latency it is configured with
and a capped link must take at least size/rate; nothing here depends on how fast this machine is.
A cut is checked by silence (no answer within a wait) and by what arrives once it heals.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.controlplane.build import ensure_built
from corral.errors import ConfigError
from corral.model import Fault, Scenario
from corral.wan import ToxiproxyClient, ToxiproxyServer, Wan, rewrite

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

RTT_MS = 120.0
SCENARIO = Scenario.from_dict(
    {
        "name": "wan-test",
        "regions": ["us", "au", "eu"],
        "rtt_ms": {"us": {"us": 2, "au": RTT_MS, "eu": 80}, "au": {"au": 2, "eu": 200}, "eu": {"eu": 2}},
        "server": {"region": "us"},
        "clusters": [
            {"name": "c-us", "region": "us", "nodes": [{"name": "c-us-cp", "roles": ["controlplane"]}]},
            {"name": "c-au", "region": "au", "nodes": [{"name": "c-au-cp", "roles": ["controlplane"]}]},
        ],
        "users": [{"name": "alice", "region": "au"}, {"name": "bob", "region": "us"}],
    }
)


class _Handler(socketserver.BaseRequestHandler):
    """Echoes each chunk; a line ``send N`` is answered with N bytes instead."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30)
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            if data.startswith(b"send "):
                sock.sendall(b"x" * int(data.split()[1]))
            else:
                sock.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToxiproxyClient]:
    binary = ensure_built(["toxiproxy-server"])["toxiproxy-server"]
    with ToxiproxyServer(Path(binary), tmp_path_factory.mktemp("wan")) as client:
        yield client


@pytest.fixture
def wan(toxiproxy: ToxiproxyClient) -> Iterator[Wan]:
    wan = Wan(toxiproxy, SCENARIO)
    try:
        yield wan
    finally:
        for route in wan.routes:
            toxiproxy.delete_proxy(route.name)


def _connect(listen: str, timeout: float = 10.0) -> socket.socket:
    host, _, port = listen.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def _round_trip(sock: socket.socket) -> float:
    start = time.monotonic()
    sock.sendall(b"p")
    assert sock.recv(1) == b"p"
    return time.monotonic() - start


def test_a_link_adds_at_least_its_round_trip_time(wan: Wan, echo: str) -> None:
    route = wan.route(from_region="au", to_region="us", upstream=echo)
    with _connect(route.listen) as sock:
        _round_trip(sock)  # the first exchange also pays the upstream dial
        samples = [_round_trip(sock) for _ in range(3)]
    assert min(samples) >= RTT_MS / 1000 - 0.001
    toxics = wan.client.toxics(route.name)
    assert {t["stream"] for t in toxics.values() if t["type"] == "latency"} == {"upstream", "downstream"}
    assert all(t["attributes"]["latency"] == RTT_MS / 2 for t in toxics.values() if t["type"] == "latency")


def test_a_latency_fault_changes_every_proxy_of_its_link_and_is_lifted(wan: Wan, echo: str) -> None:
    forward = wan.route(from_region="au", to_region="us", upstream=echo)
    backward = wan.route(from_region="us", to_region="au", upstream=echo)
    other = wan.route(from_region="eu", to_region="us", upstream=echo)
    fault = Fault(kind="latency", target="us<->au", at_seconds=0, duration_seconds=1, rtt_ms=400)
    wan.apply(fault)
    assert wan.rtt_ms("au", "us") == 400
    with _connect(backward.listen) as sock:
        _round_trip(sock)
        assert _round_trip(sock) >= 0.4 - 0.001
    for route, expected in ((forward, 200), (backward, 200), (other, 40)):
        latencies = {t["attributes"]["latency"] for t in wan.client.toxics(route.name).values()}
        assert latencies == {expected}, route.name
    wan.lift(fault)
    assert wan.rtt_ms("us", "au") == RTT_MS
    assert {t["attributes"]["latency"] for t in wan.client.toxics(forward.name).values()} == {RTT_MS / 2}


def test_a_partition_holds_the_link_silent_and_delivers_after_healing(wan: Wan, echo: str) -> None:
    cut = wan.route(from_region="au", to_region="us", upstream=echo)
    spared = wan.route(from_region="eu", to_region="us", upstream=echo)
    with _connect(cut.listen) as before, _connect(spared.listen) as unaffected:
        _round_trip(before)
        wan.apply(Fault(kind="partition", target="us<->au", at_seconds=0, duration_seconds=1))
        assert wan.partitioned("au", "us")
        before.settimeout(1.0)
        before.sendall(b"held")
        with pytest.raises(TimeoutError):
            before.recv(4)
        with _connect(cut.listen) as during:  # toxiproxy accepts; nothing crosses
            during.settimeout(0.5)
            during.sendall(b"q")
            with pytest.raises(TimeoutError):
                during.recv(1)
        unaffected.settimeout(5.0)
        _round_trip(unaffected)
        wan.lift(Fault(kind="partition", target="us<->au", at_seconds=0, duration_seconds=1))
        before.settimeout(10.0)
        received = b""
        while len(received) < 4:
            chunk = before.recv(4 - len(received))
            assert chunk, "the connection closed instead of delivering the held data"
            received += chunk
        assert received == b"held"
    assert not wan.partitioned("au", "us")


def test_a_refusing_partition_closes_and_refuses_until_healed(wan: Wan, echo: str) -> None:
    route = wan.route(from_region="au", to_region="us", upstream=echo)
    with _connect(route.listen) as sock:
        _round_trip(sock)
        wan.partition("au", "us", mode="refuse")
        sock.settimeout(5.0)
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        assert closed
    with pytest.raises(ConnectionRefusedError):
        _connect(route.listen)
    wan.heal("au", "us")
    with _connect(route.listen) as again:
        _round_trip(again)


def test_a_reset_link_resets_its_connections(wan: Wan, echo: str) -> None:
    route = wan.route(from_region="us", to_region="us", upstream=echo)
    with _connect(route.listen) as sock:
        _round_trip(sock)
        wan.reset("us", "us")
        sock.settimeout(5.0)
        sock.sendall(b"p")
        try:
            answer = sock.recv(1)
        except ConnectionResetError:
            answer = b""
        assert answer == b"", "a reset link passed data through"
    wan.unreset("us", "us")
    with _connect(route.listen) as again:
        _round_trip(again)


def test_a_bandwidth_cap_makes_a_transfer_take_at_least_size_over_rate(
    toxiproxy: ToxiproxyClient, echo: str
) -> None:
    wan = Wan(toxiproxy, SCENARIO, bandwidth_kbps=40)
    route = wan.route(from_region="us", to_region="us", upstream=echo)
    try:
        size = 60_000
        with _connect(route.listen) as sock:
            start = time.monotonic()
            sock.sendall(f"send {size}".encode())
            got = 0
            while got < size:
                chunk = sock.recv(65536)
                assert chunk
                got += len(chunk)
            elapsed = time.monotonic() - start
        assert elapsed >= size / 40_000 * 0.9
    finally:
        toxiproxy.delete_proxy(route.name)


def test_a_topology_is_routed_over_the_links_its_paths_cross(wan: Wan) -> None:
    topology = {
        "server": {"url": "https://127.0.0.1:9443", "ca_file": "ca.pem", "admin": {}},
        "clusters": {
            "c-us": {"id": "c-1", "api_server": "https://127.0.0.1:6443", "admin_kubeconfig": "k"},
            "c-au": {
                "id": "c-2",
                "api_server": "https://127.0.0.1:6444",
                "admin_kubeconfig": "k",
                "ace_endpoints": ["https://127.0.0.1:6445"],
            },
        },
        "users": {"alice": {"id": "u-1", "username": "alice", "password_file": "p", "kubeconfig": "k"}},
        "processes": [],
    }
    endpoints = rewrite(wan, SCENARIO, topology)
    by_listen = {route.listen: route for route in wan.routes}

    def link(url: str) -> tuple[str, str, str]:
        route = by_listen[url.removeprefix("https://").partition("/")[0]]
        return route.from_region, route.to_region, route.upstream

    assert link(endpoints.server_for_user["alice"]) == ("au", "us", "127.0.0.1:9443")
    assert link(endpoints.apiserver_for_user[("alice", "c-us")]) == ("au", "us", "127.0.0.1:6443")
    assert link(endpoints.apiserver_for_user[("alice", "c-au")]) == ("au", "au", "127.0.0.1:6444")
    assert [link(u) for u in endpoints.ace_for_user[("alice", "c-au")]] == [("au", "au", "127.0.0.1:6445")]
    assert link(endpoints.server_for_cluster["c-au"]) == ("au", "us", "127.0.0.1:9443")
    assert link(endpoints.apiserver_for_server["c-au"]) == ("us", "au", "127.0.0.1:6444")
    assert endpoints.server_for_user["alice"].startswith("https://127.0.0.1:")
    # one proxy per (from-region, endpoint): the tunnel and alice share the au -> server proxy
    assert endpoints.server_for_cluster["c-au"] == endpoints.server_for_user["alice"]


def test_only_loopback_endpoints_and_known_names_are_routed(wan: Wan) -> None:
    with pytest.raises(ConfigError, match="not on loopback"):
        wan.url(from_region="au", to_region="us", url="https://10.1.2.3:6443")
    with pytest.raises(ConfigError, match="unknown region 'mars'"):
        wan.route(from_region="mars", to_region="us", upstream="127.0.0.1:1")
    with pytest.raises(ConfigError, match="cluster 'c-xx' is not in scenario"):
        rewrite(wan, SCENARIO, {"clusters": {"c-xx": {"api_server": "https://127.0.0.1:1"}}})


def test_links_another_process_created_are_adopted_with_their_state(
    wan: Wan, toxiproxy: ToxiproxyClient
) -> None:
    server = wan.route(from_region="au", to_region="us", upstream="127.0.0.1:9443")
    dial = wan.route(from_region="us", to_region="au", upstream="127.0.0.1:6444")
    wan.set_rtt("eu", "us", 300)
    eu = wan.route(from_region="eu", to_region="us", upstream="127.0.0.1:9443")
    wan.partition("au", "us")
    adopted = Wan.attach(toxiproxy, SCENARIO)
    assert set(adopted.routes) == {server, dial, eu}
    assert adopted.partitioned("us", "au")
    assert not adopted.partitioned("eu", "us")
    assert adopted.rtt_ms("eu", "us") == 300
    adopted.heal("au", "us")
    adopted.set_rtt("au", "us", 400)
    for route in (server, dial):
        toxics = toxiproxy.toxics(route.name)
        assert "partition-upstream" not in toxics
        assert toxics["latency-upstream"]["attributes"]["latency"] == 200


def test_a_corral_up_topology_is_routed_and_described(wan: Wan, tmp_path: Path) -> None:
    import yaml

    from corral.run.links import UpLinks, attach_links
    from corral.run.topology import validate

    links = UpLinks(wan=wan, api=f"{wan.client.host}:{wan.client.port}")
    tunnel = links.agent_server(SCENARIO, "c-au", "https://127.0.0.1:9443")
    dial = links.dial_address(SCENARIO, "c-au", "https://127.0.0.1:6444")
    kubeconfig = tmp_path / "alice.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {"name": "c-us", "cluster": {"server": "https://127.0.0.1:9443/k8s/clusters/c-1"}},
                    {"name": "c-au-cp", "cluster": {"server": "https://127.0.0.1:6445"}},
                    {"name": "elsewhere", "cluster": {"server": "https://127.0.0.1:7000"}},
                ]
            }
        )
    )
    document = {
        "server": {"url": "https://127.0.0.1:9443", "ca_file": "ca", "admin": {"username": "admin",
                   "password_file": "p", "token_file": "t"}},
        "clusters": {
            "c-au": {"id": "c-2", "api_server": "https://127.0.0.1:6444", "admin_kubeconfig": "k",
                     "ace_endpoints": ["https://127.0.0.1:6445"]},
        },
        "users": {"alice": {"id": "u-1", "username": "alice", "password_file": "p",
                            "kubeconfig": str(kubeconfig)}},
        "processes": [],
    }  # fmt: skip
    links.route_users(SCENARIO, document)
    validate(document)
    by_listen = {r.listen: r for r in wan.routes}

    def route_of(url: str) -> tuple[str, str, str]:
        route = by_listen[url.removeprefix("https://").partition("/")[0]]
        return route.from_region, route.to_region, route.upstream

    assert route_of(tunnel) == ("au", "us", "127.0.0.1:9443")
    assert route_of(dial) == ("us", "au", "127.0.0.1:6444")
    servers = [c["cluster"]["server"] for c in yaml.safe_load(kubeconfig.read_text())["clusters"]]
    assert route_of(servers[0]) == ("au", "us", "127.0.0.1:9443")
    assert servers[0].endswith("/k8s/clusters/c-1")
    assert route_of(servers[1]) == ("au", "au", "127.0.0.1:6445")
    assert servers[2] == "https://127.0.0.1:7000"  # not an endpoint of the topology: left alone
    carried = {tuple(link["carries"]) for link in document["wan"]["links"]}
    assert ("tunnel c-au", "user alice") in carried
    assert ("dial c-au",) in carried
    assert attach_links(document, SCENARIO) is not None
    assert attach_links({"clusters": {}}, SCENARIO) is None
