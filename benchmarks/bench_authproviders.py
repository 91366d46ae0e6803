"""Auth provider benchmark: login and group-refresh latency of each provider on loopback.

OpenLDAP (LDAPS, nested groups) and Active Directory style (StartTLS) against a real slapd, GitHub against
the local stand-in of its API (OAuth exchange, /user, paginated /user/orgs and /user/teams). Each login
is a full conversation: new connection, TLS, service-account bind, search, user bind, group searches.
Output: ``reports/bench/authproviders.json`` and a Markdown table on stdout (p50/p95/max in ms).
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from corral.model.stats import quantile
from corral.server.providers import parse_auth_config, provider_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server.providers.github_standin import CLIENT_ID, CLIENT_SECRET, seeded, serving  # noqa: E402
from tests.server.providers.slapd import (  # noqa: E402
    AD_BASE,
    OPENLDAP_BASE,
    PASSWORDS,
    SERVICE_PASSWORD,
    running_slapd,
)

REPORT = ROOT / "reports" / "bench" / "authproviders.json"
RUNS = 100
WARMUP = 5


async def _measure(action: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    for _ in range(WARMUP):
        await action()
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        await action()
        samples.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": quantile(samples, 50),
        "p95_ms": quantile(samples, 95),
        "max_ms": max(samples),
        "runs": RUNS,
    }


async def _directory(folder: Path) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with running_slapd(folder) as slapd:
        openldap = provider_for(
            parse_auth_config(
                {
                    "type": "openLdapConfig",
                    "servers": ["127.0.0.1"],
                    "port": slapd.ldaps_port,
                    "tls": True,
                    "certificate": slapd.ca_pem,
                    "serviceAccountDistinguishedName": f"cn=rancher-svc,{OPENLDAP_BASE}",
                    "serviceAccountPassword": SERVICE_PASSWORD,
                    "userSearchBase": OPENLDAP_BASE,
                    "nestedGroupMembershipEnabled": True,
                }
            )
        )
        user = {"username": "alice", "password": PASSWORDS["alice"]}
        alice = (await openldap.login(user)).user.id
        results["openldap login (LDAPS, nested groups)"] = await _measure(lambda: openldap.login(user))
        results["openldap refresh"] = await _measure(lambda: openldap.refresh(alice))
        ad = provider_for(
            parse_auth_config(
                {
                    "type": "activeDirectoryConfig",
                    "servers": ["127.0.0.1"],
                    "port": slapd.ldap_port,
                    "starttls": True,
                    "certificate": slapd.ca_pem,
                    "serviceAccountUsername": f"cn=Rancher Service,cn=Users,{AD_BASE}",
                    "serviceAccountPassword": SERVICE_PASSWORD,
                    "userSearchBase": AD_BASE,
                    "userNameAttribute": "cn",
                    "groupNameAttribute": "cn",
                    "groupDNAttribute": "entryDN",
                    "nestedGroupMembershipEnabled": True,
                }
            )
        )
        erin = {"username": "erin", "password": PASSWORDS["erin"]}
        results["activedirectory login (StartTLS, nested groups)"] = await _measure(lambda: ad.login(erin))
    return results


async def _github() -> dict[str, dict[str, float]]:
    state = seeded()
    async with serving(state) as host:
        config = parse_auth_config(
            {
                "type": "githubConfig",
                "hostname": host,
                "tls": False,
                "clientId": CLIENT_ID,
                "clientSecret": CLIENT_SECRET,
            }
        )
        github = provider_for(config)
        try:
            token = (await github.login({"code": state.issue_code(1)})).provider_secret
            login = await _measure(lambda: github.login({"code": state.issue_code(1)}))
            refresh = await _measure(lambda: github.refresh("github_user://1", secret=token))
        finally:
            await github.aclose()
    return {"github login (stand-in, 2 items/page)": login, "github refresh": refresh}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        results = asyncio.run(_directory(Path(folder)))
    results.update(asyncio.run(_github()))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"python": platform.python_version(), "results": results}, indent=2) + "\n")
    print("| operation | p50 ms | p95 ms | max ms |\n|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['max_ms']:.1f} |")


if __name__ == "__main__":
    main()
