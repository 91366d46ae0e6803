"""Header rewriting for the authentication proxy: what reaches the cluster and what comes back.

Pure functions over header lists, so the rules can be checked exhaustively. Downstream, every
header the client sent that could impersonate (any case, any spelling with ``_``, repeated,
percent-encoded, ``Impersonate-Uid``) is dropped, hop-by-hop headers (including those the client
named in ``Connection``, the CVE-2021-31999 trick) are dropped, and only then are the proxy's own
``Authorization`` and ``Impersonate-*`` headers added, so nothing the client lists can remove them.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from corral.auth.identity import UserInfo
from corral.server.proxy_interfaces import ProxyError

Headers = Sequence[tuple[str, str]]

#: Hop-by-hop headers (RFC 9110 section 7.6.1 and the ones Go's reverse proxy also drops), lower case.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

#: The extras Rancher puts on a user, in the order it writes them.
EXTRA_ORDER = ("principalid", "username", "requesttokenid", "requesthost")

#: Common request headers passed on as they are (unless ``Connection`` names them): no rule applies to
#: their lower-case spelling, so the fuller checks are skipped.
_PLAIN = frozenset(
    {
        "accept",
        "accept-encoding",
        "user-agent",
        "content-type",
        "content-length",
        "kubectl-command",
        "kubectl-session",
        "audit-id",
        "if-none-match",
        "if-match",
        "x-request-id",
    }
)

SESSION_COOKIE = "R_SESS"
_EXTRA_PREFIX = "impersonate-extra-"
#: Characters of an HTTP token (RFC 9110 ``tchar``) except ``%``, which must be escaped in extra keys.
_KEY_SAFE = "!#$&'*+-.^_`|~"
#: Control characters other than tab: never in a header value the proxy writes.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


_NONE: frozenset[str] = frozenset()


class HeaderValueError(ProxyError):
    """A header value the proxy would send contains a control character."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientImpersonation:
    """What the client asked to impersonate (``kubectl --as``, ``--as-group``, ``--as-user-extra``)."""

    user: str = ""
    groups: tuple[str, ...] = ()
    extras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_NOBODY = ClientImpersonation()
"""What a request without impersonation headers asks for (shared: the value never changes)."""


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def is_impersonation_header(name: str) -> bool:
    """Would this header (in any spelling a server might normalise) ask for impersonation?"""
    return _normalise(name).startswith("impersonate-")


def connection_tokens(headers: Headers) -> frozenset[str]:
    """Every option named by the ``Connection`` headers, lower case."""
    if not any(name.lower() == "connection" for name, _ in headers):
        return _NONE
    return frozenset(
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    )


def upgrade_protocol(headers: Headers) -> str | None:
    """The ``Upgrade`` value of an upgrade request (``Connection: upgrade`` plus ``Upgrade``), else None."""
    if "upgrade" not in connection_tokens(headers):
        return None
    values = [value.strip() for name, value in headers if name.lower() == "upgrade" and value.strip()]
    return ", ".join(values) if values else None


def client_impersonation(headers: Headers) -> ClientImpersonation:
    """Read what the client asks to impersonate, as kube-apiserver and Rancher read it.

    The first ``Impersonate-User`` wins; extra keys are lower-cased and percent-decoded, and the
    values of keys that decode alike are merged (so each one is reviewed).
    """
    if not any(name[:12].lower() == "impersonate-" for name, _ in headers):
        return _NOBODY
    user = ""
    groups: list[str] = []
    extras: dict[str, list[str]] = {}
    for name, value in headers:
        lower = name.lower()
        if lower == "impersonate-user":
            user = user or value
        elif lower == "impersonate-group":
            groups.append(value)
        elif lower.startswith(_EXTRA_PREFIX):
            key = urllib.parse.unquote(lower[len(_EXTRA_PREFIX) :])
            extras.setdefault(key, []).append(value)
    return ClientImpersonation(
        user=user, groups=tuple(groups), extras={key: tuple(values) for key, values in extras.items()}
    )


@functools.lru_cache(maxsize=4096)
def extra_header_name(key: str) -> str:
    """``Impersonate-Extra-<Key>`` in Go's canonical case, the key percent-encoded where needed."""
    encoded = urllib.parse.quote(key, safe=_KEY_SAFE)
    return "Impersonate-Extra-" + "-".join(part[:1].upper() + part[1:] for part in encoded.split("-"))


def impersonation_headers(identity: UserInfo) -> list[tuple[str, str]]:
    """``Impersonate-User``, ``Impersonate-Group`` per group, ``Impersonate-Extra-*`` (no empty values)."""
    headers = [("Impersonate-User", identity.name)]
    headers += [("Impersonate-Group", group) for group in identity.groups]
    known = [key for key in EXTRA_ORDER if key in identity.extras]
    others = sorted(key for key in identity.extras if key not in EXTRA_ORDER)
    for key in known + others:
        headers += [(extra_header_name(key), value) for value in identity.extras[key] if value]
    return headers


def _without_session_cookie(value: str) -> str:
    kept = [part for part in value.split(";") if part.strip().partition("=")[0].strip() != SESSION_COOKIE]
    return ";".join(kept).strip()


def own_headers(token: str, identity: UserInfo | None) -> list[tuple[str, str]]:
    """The proxy's own headers: ``Authorization`` with ``token``, then ``identity``'s impersonation.

    `HeaderValueError` when a value holds a control character. Depends only on its arguments, so a
    caller may keep the result for the same token and identity.
    """
    own = [("Authorization", f"Bearer {token}")]
    if identity is not None:
        own += impersonation_headers(identity)
    for _, value in own:
        _check_value(value)
    return own


def downstream_headers(
    headers: Headers,
    *,
    token: str,
    identity: UserInfo | None,
    client_address: str | None = None,
    own: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """The request headers to send to the cluster.

    ``token`` replaces ``Authorization``; ``identity`` (None for a ServiceAccount's own token) adds
    the impersonation headers (``own``, when given, is `own_headers` of the two, computed before).
    ``Host`` is left to the client library (the endpoint's host), and the session cookie (a Rancher
    credential) is not passed on.
    """
    named = connection_tokens(headers)
    protocol = upgrade_protocol(headers) if "upgrade" in named else None
    out: list[tuple[str, str]] = []
    forwarded_for: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower not in _PLAIN:
            lower = _normalise(name)
            if lower in HOP_BY_HOP or (named and (lower in named or name.strip().lower() in named)):
                continue
            if lower.startswith("impersonate-") or lower in ("authorization", "host"):
                continue
            if lower == "x-forwarded-for":
                forwarded_for.append(value)
                continue
            if lower == "cookie":
                cookies = _without_session_cookie(value)
                if cookies:
                    out.append((name, cookies))
                continue
        elif named and lower in named:
            continue
        out.append((name, value))
    if client_address:
        forwarded_for.append(client_address)
    if forwarded_for:
        out.append(("X-Forwarded-For", ", ".join(forwarded_for)))
    if protocol is not None:
        out += [("Connection", "Upgrade"), ("Upgrade", protocol)]
    return out + (own if own is not None else own_headers(token, identity))


def _check_value(value: str) -> None:
    if _CONTROL.search(value) is not None:
        raise HeaderValueError("an identity or credential value contains a control character")


def upstream_response_headers(headers: Headers, *, upgrade: bool = False) -> list[tuple[str, str]]:
    """Response headers for the client: hop-by-hop ones dropped (kept as the upgrade needs on a 101)."""
    named = connection_tokens(headers)
    out = [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP]
    if named:
        out = [(name, value) for name, value in out if name.lower() not in named]
    if upgrade:
        protocol = next((v for n, v in headers if n.lower() == "upgrade"), "")
        out += [("Connection", "Upgrade"), ("Upgrade", protocol)]
    return out


def has_header(headers: Iterable[tuple[str, str]], name: str) -> bool:
    lower = name.lower()
    return any(n.lower() == lower for n, _ in headers)
