"""The exception tree of corral, raised at its boundaries.

    CorralError
    ├── ConfigError                   bad scenario, calibration or settings (message: where, what, expected)
    ├── BuildError                    a Go-built binary could not be made (missing toolchain, module, compile)
    ├── ControlPlaneError             a control-plane process did not start or stop as asked
    ├── KubeAPIError                  a Kubernetes API call failed (status, reason); status 0: no answer
    │   ├── BadRequestError           400
    │   ├── UnauthorizedError         401
    │   ├── ForbiddenError            403
    │   ├── NotFoundError             404
    │   ├── ConflictError             409 Conflict (a stale resourceVersion, an apply conflict)
    │   ├── AlreadyExistsError        409 AlreadyExists
    │   ├── GoneError                 410 Expired/Gone (a watch or list resourceVersion is too old)
    │   ├── InvalidError              422
    │   ├── TooManyRequestsError      429
    │   ├── ServerTimeoutError        504, or reason Timeout
    │   └── ServiceUnavailableError   503
    └── TunnelError                   the remotedialer-compatible tunnel (see corral.tunnel)
        ├── ProtocolError             a frame that does not follow remotedialer's wire format
        │   └── UnknownMessageTypeError   a well-formed frame of a type remotedialer does not define
        ├── SessionNotFoundError      no tunnel session for a client key
        ├── TunnelClosedError         the session or connection ended (the reason is the message)
        └── HandshakeError            the tunnel server refused the websocket handshake

Every class ends in ``Error``, so none is confused with a trace event of the same subject
(`corral.model.trace.TunnelClosed` is an event; `TunnelClosedError` is raised).
`UnknownMessageTypeError` lives in `corral.tunnel.message` and `HandshakeError` in
`corral.tunnel.websocket`, beside the code that raises them.

Third-party errors are translated where they enter corral and chained with ``from``.
Messages never include secrets (tokens, keys); they name the offending value otherwise.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error corral raises on purpose."""


class ConfigError(CorralError):
    """A scenario, calibration or settings value is invalid; the message locates it."""


class BuildError(CorralError):
    """A binary corral builds from Go modules could not be built."""


class ControlPlaneError(CorralError):
    """A control-plane process (etcd, kube-apiserver, ...) failed to start, get ready or stop."""


class KubeAPIError(CorralError):
    """A call to a kube-apiserver failed with an HTTP status."""

    def __init__(self, message: str, *, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class BadRequestError(KubeAPIError):
    """400: the request is malformed (a bad query, a body the API cannot decode)."""


class UnauthorizedError(KubeAPIError):
    """401: the apiserver did not accept the credentials."""


class ForbiddenError(KubeAPIError):
    """403: authenticated, but RBAC (or an admission plugin) refused the request."""


class NotFoundError(KubeAPIError):
    """404: no such object, or no such resource path."""


class ConflictError(KubeAPIError):
    """409 Conflict: the object changed since it was read, or an apply conflicts with another manager."""


class AlreadyExistsError(KubeAPIError):
    """409 AlreadyExists: a create named an object that exists."""


class GoneError(KubeAPIError):
    """410: the resourceVersion asked for is compacted away; list again and watch from the list's."""


class InvalidError(KubeAPIError):
    """422: the object fails validation; the message names the fields."""


class TooManyRequestsError(KubeAPIError):
    """429: API priority and fairness (or an eviction budget) asks the client to come back later."""


class ServerTimeoutError(KubeAPIError):
    """504 or reason Timeout: the apiserver gave up on the request; it may be retried."""


class ServiceUnavailableError(KubeAPIError):
    """503: the apiserver (or an aggregated API behind it) is not ready to serve."""


class TunnelError(CorralError):
    """The tunnel could not carry a connection or a session ended."""


class ProtocolError(TunnelError):
    """A tunnel frame is malformed: the message says which field and why."""


class SessionNotFoundError(TunnelError):
    """No tunnel session is registered for the client key that was asked for."""


class TunnelClosedError(TunnelError):
    """A tunnel session or one of its connections ended; the message gives the reason."""
