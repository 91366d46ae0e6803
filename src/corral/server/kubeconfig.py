"""The kubeconfig that ``generateKubeconfig`` returns, rendered as Rancher's token template renders it.

One cluster entry ``https://<host>/k8s/clusters/<id>`` named by the cluster's display name, the
``cacerts`` setting base64-encoded and folded with ``\\`` continuations (49 characters, then lines of
up to 76), one user with the token, one context (``pkg/kubeconfig``). Pure text: the v3 API and
``corral kubeconfig`` both call it.
"""

from __future__ import annotations

import base64
import logging
import urllib.parse
from typing import Final

logger = logging.getLogger(__name__)

__all__ = ["format_cert_string", "kubeconfig_host", "token_kubeconfig"]

_FIRST: Final = 49
_LINE: Final = 76
_DELIMITER: Final = "\\\n      "


def format_cert_string(data: str) -> str:
    """Rancher's FormatCertString: 49 characters, then runs of up to 76, joined by ``\\`` and a newline."""
    if len(data) <= _FIRST:
        return data
    head, rest = data[:_FIRST], data[_FIRST:]
    runs = [run for word in rest.split() for run in (word[i : i + _LINE] for i in range(0, len(word), _LINE))]
    return head + "".join(_DELIMITER + run for run in runs)


def kubeconfig_host(server_url: str, request_host: str) -> str:
    """The host of the ``server-url`` setting, or the request's Host when the setting is empty or bad."""
    if not server_url:
        return request_host
    parsed = urllib.parse.urlsplit(server_url)
    return parsed.netloc or request_host


def token_kubeconfig(*, cluster_name: str, cluster_id: str, host: str, token: str, cacerts: str) -> str:
    """The kubeconfig of Rancher's ``tokenTemplateText`` for one cluster and a token user."""
    name = cluster_name or cluster_id
    cert = format_cert_string(base64.b64encode(cacerts.encode()).decode()) if cacerts else ""
    lines = [
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        f'- name: "{name}"',
        "  cluster:",
        f'    server: "https://{host}/k8s/clusters/{cluster_id}"',
    ]
    if cert:
        lines.append(f'    certificate-authority-data: "{cert}"')
    lines += [
        "",
        "users:",
        f'- name: "{name}"',
        "  user:",
        f'    token: "{token}"',
        "",
        "",
        "contexts:",
        f'- name: "{name}"',
        "  context:",
        f'    user: "{name}"',
        f'    cluster: "{name}"',
        "",
        f'current-context: "{name}"',
        "",
    ]
    return "\n".join(lines)
