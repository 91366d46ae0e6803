"""``corral etcd snapshot|restore``: the server's etcd actions on a cluster of a brought-up run folder.

Calls ``POST /v3/clusters/<id>?action=backupEtcd`` and ``?action=restoreFromEtcdBackup`` as the
topology's admin (``RUN/topology.json``: the server's URL and CA, the admin's token file); the server
has a node agent of the cluster do the work over its tunnel (docs/agents.md#node-operations-etcd-snapshots).
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from corral.errors import ConfigError, CorralError
from corral.run.topology import read_topology

logger = logging.getLogger(__name__)

__all__ = ["EtcdActionError", "etcd_action"]


class EtcdActionError(CorralError):
    """The server refused or failed the action; the message is its answer."""


def etcd_action(run_dir: Path, *, cluster: str, backup: str | None = None) -> dict[str, Any]:
    """Snapshot ``cluster`` (``backup`` None) or restore its backup ``backup``; the server's answer."""
    topology = read_topology(run_dir)
    entry = topology["clusters"].get(cluster) or next(
        (c for c in topology["clusters"].values() if c["id"] == cluster), None
    )
    if entry is None:
        known = ", ".join(topology["clusters"]) or "none"
        raise ConfigError(f"no cluster {cluster!r} in {run_dir} (known: {known})")
    server = topology["server"]
    token = Path(server["admin"]["token_file"]).read_text(encoding="utf-8").strip()
    action = "backupEtcd" if backup is None else "restoreFromEtcdBackup"
    body = {} if backup is None else {"etcdBackupId": backup}
    request = urllib.request.Request(  # noqa: S310 - the topology's https URL
        f"{server['url']}/v3/clusters/{entry['id']}?action={action}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=server["ca_file"])
    try:
        with urllib.request.urlopen(request, context=context, timeout=600) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            text = json.loads(text).get("message") or text
        raise EtcdActionError(f"{action} on {cluster}: HTTP {exc.code}: {text[:300]}") from None
    except OSError as exc:
        raise EtcdActionError(f"{action} on {cluster}: cannot reach {server['url']}: {exc}") from None
    return answer
