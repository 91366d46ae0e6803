"""The blocking transport under `KubeClient`: the official ``kubernetes`` ApiClient over urllib3.

Imported on the first client, not with `corral.k8s`: the official package loads every API model
at import, a cost the CLI should pay only when it talks to a cluster. The `KubeConfigLoader` sets
the host and the identity (token, or an exec plugin with refresh on expiry); corral gives the
urllib3 pool a TLS context built in memory, so no CA, certificate or key file outlives the build.
Requests go through `ApiClient.update_params_for_auth` and `ApiClient.request` rather than
``call_api``, which folds headers into a dict and so cannot send one ``Impersonate-Group`` line
per group.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import warnings
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KubeConfigLoader

from corral.errors import ConfigError, KubeAPIError
from corral.k8s.connect import (
    CONTEXT,
    loader_document,
    private_folder,
    read_loaded_pair,
    require_credentials,
    ssl_context,
)
from corral.k8s.errors import connection_error, cut
from corral.k8s.kubeconfig import KubeConfig
from corral.k8s.protocol import Prepared

logger = logging.getLogger(__name__)

_POOL_SIZE = 8


class SyncTransport:
    """One ApiClient (one urllib3 pool, thread-safe) for one kubeconfig."""

    def __init__(self, config: KubeConfig, *, timeout_seconds: float) -> None:
        self.server = config.server
        self.timeout_seconds = timeout_seconds
        self._insecure = config.insecure_skip_tls_verify
        if self._insecure:
            logger.warning(
                "%s: insecure-skip-tls-verify, the server's certificate is not checked", config.server
            )
        configuration = Configuration()
        with private_folder() as folder:
            loader = KubeConfigLoader(
                config_dict=loader_document(config),
                active_context=CONTEXT,
                config_base_path=None,
                temp_file_path=str(folder),
            )
            try:
                loader.load_and_set(configuration)
            except ConfigException as e:
                raise ConfigError(f"kubeconfig user {config.user_name!r}: {cut(str(e))}") from None
            pair = read_loaded_pair(configuration.cert_file, configuration.key_file)
        require_credentials(config, token="BearerToken" in configuration.api_key, pair=pair)
        configuration.cert_file = configuration.key_file = configuration.ssl_ca_cert = None
        self._api = ApiClient(configuration)
        self._api.rest_client.pool_manager.clear()
        self._api.rest_client.pool_manager = _pool(config, ssl_context(config, client_pair=pair))

    def close(self) -> None:
        self._api.rest_client.pool_manager.clear()
        self._api.close()

    def send(self, request: Prepared, *, timeout_seconds: float | None = None) -> tuple[int, bytes]:
        """Status and body of one request; answers >= 400 are returned, not raised."""
        response = self._open(request, timeout=timeout_seconds or self.timeout_seconds)
        try:
            return response.status, response.data or b""
        finally:
            response.release_conn()

    def stream(self, request: Prepared, *, read_timeout_seconds: float) -> Any:
        """A response whose body is read as it comes (a watch); the caller closes it."""
        return self._open(request, timeout=(self.timeout_seconds, read_timeout_seconds))

    def _open(self, request: Prepared, *, timeout: float | tuple[float, float]) -> Any:
        headers = urllib3.HTTPHeaderDict()
        for name, value in request.headers:
            headers.add(name, value)
        try:
            self._api.update_params_for_auth(headers, request.query, ["BearerToken"])
            with _quiet(insecure=self._insecure):
                return self._api.request(
                    request.method,
                    self._api.configuration.host + request.path,
                    query_params=request.query or None,
                    headers=headers,
                    body=request.body,
                    _preload_content=False,
                    _request_timeout=timeout,
                )
        except ApiException as e:
            if not e.status:
                # The rest client reports TLS failures as an ApiException with status 0.
                raise connection_error(request.method, request.path, self.server, e) from e
            return _Answered(e.status, e.body)
        except urllib3.exceptions.HTTPError as e:
            raise connection_error(request.method, request.path, self.server, e) from e
        except ConfigException as e:
            raise KubeAPIError(
                f"{request.method} {request.path}: refreshing credentials failed: {cut(str(e))}",
                status=0,
                reason="CredentialError",
            ) from None


class _Answered:
    """An error answer the rest client raised, shaped like the urllib3 response it read."""

    def __init__(self, status: int, body: object) -> None:
        self.status = status
        self.data = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else b""

    def release_conn(self) -> None:
        pass

    def stream(self, *_: object, **__: object) -> Iterator[bytes]:
        yield self.data

    def close(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


@contextlib.contextmanager
def _quiet(*, insecure: bool) -> Iterator[None]:
    """An insecure kubeconfig was said once, when the client was built: not again on every request."""
    if not insecure:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        yield


def _pool(config: KubeConfig, context: ssl.SSLContext) -> urllib3.PoolManager:
    secure = not config.insecure_skip_tls_verify
    options: dict[str, Any] = {}
    if config.tls_server_name:
        options["server_hostname"] = config.tls_server_name
    return urllib3.PoolManager(
        num_pools=4,
        maxsize=_POOL_SIZE,
        ssl_context=context,
        cert_reqs=ssl.CERT_REQUIRED if secure else ssl.CERT_NONE,
        assert_hostname=None if secure else False,
        retries=urllib3.Retry(total=2, redirect=False, raise_on_status=False),
        **options,
    )
