"""The pure pieces of ACE around the server: token and user copies, the HAProxy config, the run's
plan and what it writes on the Cluster for the server's ACE contexts, the doctor's reading of an
apiserver's flags and webhook file."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.auth import hashers
from corral.controlplane.loadbalancer import render_config
from corral.errors import ConfigError
from corral.model import Scenario
from corral.run import ace
from corral.server.ace_sync import ace_enabled, token_copy, user_copy
from corral.server.doctor_ace import AceReport, check_webhook_config, webhook_flag
from corral.server.kubeconfig import ace_entries

SCENARIO = {
    "name": "t",
    "regions": ["us"],
    "clusters": [
        {"name": "a", "region": "us", "ace": True, "nodes": [{"name": "a-cp", "roles": ["controlplane"]}]},
        {
            "name": "b",
            "region": "us",
            "ace_fqdn": True,
            "nodes": [
                {"name": "b-cp{i}", "count": 2, "roles": ["controlplane"]},
                {"name": "b-w", "roles": ["worker"]},
            ],
        },
        {"name": "c", "region": "us", "nodes": [{"name": "c-cp", "roles": ["controlplane"]}]},
    ],
}


def test_ace_fqdn_implies_ace_and_ace_defaults_off() -> None:
    clusters = {c.name: c for c in Scenario.from_dict(SCENARIO).clusters}
    assert (clusters["a"].ace, clusters["a"].ace_fqdn) == (True, False)
    assert (clusters["b"].ace, clusters["b"].ace_fqdn) == (True, True)
    assert (clusters["c"].ace, clusters["c"].ace_fqdn) == (False, False)


def test_token_copy_takes_the_scope_the_expiry_and_the_hash() -> None:
    hashed = hashers.hash_secret("s" * 54)
    token = {
        "metadata": {"name": "kubeconfig-u-1abcd", "creationTimestamp": "2030-01-01T00:00:00Z"},
        "token": hashed,
        "userId": "u-1",
        "clusterName": "c-x",
        "ttl": 90_000,
        "enabled": False,
    }
    copy = token_copy(token)
    assert (copy.name, copy.user_id, copy.cluster, copy.enabled) == (
        "kubeconfig-u-1abcd",
        "u-1",
        "c-x",
        False,
    )
    assert copy.expires_at == "2030-01-01T00:01:30Z"
    assert copy.hashed == hashed
    plain = token_copy({**token, "token": "plaintext", "ttl": 0})
    assert plain.expires_at == ""
    assert hashers.verify(plain.hashed, "plaintext")


def test_user_copy_keeps_local_prefixes_sorted_and_enablement() -> None:
    attributes = {
        "GroupPrincipals": {
            "local": {
                "items": [{"metadata": {"name": "local://ops"}}, {"metadata": {"name": "local://devs"}}]
            },
            "github": {"items": [{"metadata": {"name": "github_team://7"}}]},
        },
        "ExtraByProvider": {"local": {"username": ["carol"]}},
    }
    copy = user_copy({"metadata": {"name": "u-1"}, "enabled": False}, attributes)
    assert copy.groups == ("github_team://7", "local://devs", "local://ops")
    assert copy.enabled is False
    assert copy.extra_by_provider == {"local": {"username": ("carol",)}}
    assert user_copy({"metadata": {"name": "u-2"}}, None).groups == ()


def test_ace_enabled_reads_the_local_cluster_auth_endpoint() -> None:
    assert ace_enabled({"spec": {"localClusterAuthEndpoint": {"enabled": True}}})
    assert not ace_enabled({"spec": {"localClusterAuthEndpoint": {"enabled": False}}})
    assert not ace_enabled({"spec": {}})


def test_haproxy_config_is_tcp_round_robin_with_checks() -> None:
    text = render_config(
        listen_host="127.0.0.1",
        listen_port=9443,
        backends={"b-cp1": "https://127.0.0.1:1001", "b-cp2": "https://127.0.0.1:1002"},
    )
    assert "mode tcp" in text
    assert "bind 127.0.0.1:9443" in text
    assert "server b-cp1 127.0.0.1:1001 check" in text
    assert "server b-cp2 127.0.0.1:1002 check" in text
    assert "option redispatch" in text
    with pytest.raises(ConfigError, match="at least one backend"):
        render_config(listen_host="127.0.0.1", listen_port=1, backends={})
    with pytest.raises(ConfigError, match="https://host:port"):
        render_config(listen_host="127.0.0.1", listen_port=1, backends={"x": "http://h"})


def test_plan_writes_one_webhook_per_control_plane_node(tmp_path: Path) -> None:
    plans = ace.plan(Scenario.from_dict(SCENARIO), tmp_path)
    assert set(plans) == {"a", "b"}
    assert set(plans["b"].webhooks) == {"b-cp1", "b-cp2"}
    assert plans["a"].fqdn_port is None
    assert plans["b"].fqdn.startswith("localhost:")
    webhook = yaml.safe_load(plans["b"].webhooks["b-cp2"].read_text())
    server = webhook["clusters"][0]["cluster"]["server"]
    assert server == f"http://127.0.0.1:{plans['b'].auth_ports['b-cp2']}/v1/authenticate"
    assert webhook["current-context"] == "webhook"
    assert ace.entries(plans, "c") == {}
    plans["a"].apiservers = {"a-cp": "https://127.0.0.1:7001"}
    assert ace.entries(plans, "a")["ace_endpoints"] == ["https://127.0.0.1:7001"]
    assert ace.entries(plans, "b")["ace_endpoints"] == [f"https://{plans['b'].fqdn}"]
    report = AceReport(cluster="b")
    assert check_webhook_config(report, "b-cp2", plans["b"].webhooks["b-cp2"]) == (
        f"http://127.0.0.1:{plans['b'].auth_ports['b-cp2']}"
    )
    assert report.healthy


class _Patches:
    """Stands for the upstream KubeClient: `enable` only patches."""

    def __init__(self) -> None:
        self.patches: dict[str, Any] = {}

    def patch(self, path: str, body: Any) -> Any:
        self.patches[path] = body
        return body


def test_enable_writes_what_the_server_renders_ace_contexts_from(tmp_path: Path) -> None:
    plans = ace.plan(Scenario.from_dict(SCENARIO), tmp_path)
    pem = b"-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"
    plans["a"].apiservers = {"a-cp": "https://127.0.0.1:7001"}
    plans["b"].apiservers = {"b-cp1": "https://127.0.0.1:7002", "b-cp2": "https://127.0.0.1:7003"}
    for plan in plans.values():
        plan.ca_pem = pem
    upstream = _Patches()
    ace.enable(upstream, plans, {"a": "c-aaaaa", "b": "c-bbbbb"})  # type: ignore[arg-type]
    rendered: dict[str, list[tuple[str, str]]] = {}
    for name, cluster_id in (("a", "c-aaaaa"), ("b", "c-bbbbb")):
        patch = upstream.patches[f"/apis/management.cattle.io/v3/clusters/{cluster_id}"]
        cluster = {
            "metadata": {"name": cluster_id, **patch["metadata"]},
            "spec": {"displayName": name, **patch["spec"]},
            "status": {"caCert": base64.b64encode(pem).decode()},
        }
        rendered[name] = [(e.name, e.server) for e in ace_entries(cluster)]
        assert cluster["spec"]["localClusterAuthEndpoint"]["caCerts"] == (pem.decode() if name == "b" else "")
    assert rendered == {
        "a": [("a-cp", "https://127.0.0.1:7001")],
        "b": [("b-fqdn", f"https://{plans['b'].fqdn}")],
    }


def test_webhook_flag_and_a_wrong_webhook_server(tmp_path: Path) -> None:
    assert webhook_flag(["kube-apiserver", "--authentication-token-webhook-config-file=/x.yaml"]) == Path(
        "/x.yaml"
    )
    assert webhook_flag(["kube-apiserver", "--authentication-token-webhook-config-file", "/y"]) == Path("/y")
    assert webhook_flag(["kube-apiserver"]) is None
    report = AceReport(cluster="c")
    assert check_webhook_config(report, "apiserver", None) is None
    bad = tmp_path / "w.yaml"
    bad.write_text(yaml.safe_dump({"clusters": [{"cluster": {"server": "https://10.0.0.1:6440/authn"}}]}))
    assert check_webhook_config(report, "apiserver", bad) is None
    assert [f.kind for f in report.findings] == ["missing", "wrong"]
