"""The only code in corral that talks to the Kubernetes API: kubeconfigs, clients, typed errors.

`KubeClient` (blocking, over the official ``kubernetes`` package) serves fixtures, tests, the CLI
and the control-plane bring-up; `corral.k8s.aio.AsyncKubeClient` (over ``kubernetes_asyncio``)
serves event-loop code. Both map failures to the `KubeAPIError` subclasses re-exported here.
"""

from corral.k8s.client import KubeClient, Response, Watch, wait_for
from corral.k8s.errors import (
    AlreadyExistsError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    KubeAPIError,
    NotFoundError,
    ServerTimeoutError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
)
from corral.k8s.kubeconfig import ExecPlugin, KubeConfig

__all__ = [
    "AlreadyExistsError",
    "BadRequestError",
    "ConflictError",
    "ExecPlugin",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "KubeAPIError",
    "KubeClient",
    "KubeConfig",
    "NotFoundError",
    "Response",
    "ServerTimeoutError",
    "ServiceUnavailableError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "Watch",
    "wait_for",
]
