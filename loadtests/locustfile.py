"""locust users sending a scenario's kubectl-like traffic over the plan's paths (proxy, ACE, direct).

Run by `corral load run` (headless; one process, or a master and N workers on 127.0.0.1), never
imported by corral: locust patches the standard library with gevent. The plan comes from
``CORRAL_LOAD_PLAN``, this process's name in its files from ``CORRAL_LOAD_PROCESS``. Each process
writes, beside locust's own CSV and HTML, the trace events of its requests and streams
(``trace-<process>.jsonl``) and its write log (``writes-<process>.jsonl``).

Every greenlet stops by itself: at the plan's ``stop_at``, after its share of ``max_requests``,
or when the workload's last entry ends.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.ssl
from locust import FastHttpUser, constant, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.exception import StopUser

from corral.model import RequestCompleted, StreamBroken, StreamEnded
from loadtests.kubetraffic import LIST_LABEL as _LIST_LABEL
from loadtests.kubetraffic import (
    Actor,
    Arrivals,
    Plan,
    Target,
    acknowledged,
    actors,
    classify,
    configmap_body,
    configmaps,
    get_fixture_name,
    object_data,
    padding,
    pick_kind,
    read_plan,
    write_record,
)

PLAN: Plan = read_plan(json.loads(Path(os.environ["CORRAL_LOAD_PLAN"]).read_text(encoding="utf-8")))
PROCESS = os.environ.get("CORRAL_LOAD_PROCESS", "local")
ACTORS: list[Actor] = actors(PLAN)
_GREENLETS = itertools.count()
_STREAMS = {"open": 0}


class _Lines:
    """An append-only JSONL file of this process, opened on first use and flushed per line."""

    def __init__(self, name: str) -> None:
        self.path = Path(PLAN.out_dir) / f"{name}-{PROCESS}.jsonl"
        self._file: Any = None
        self._lock = threading.Lock()

    def write(self, data: dict[str, Any]) -> None:
        with self._lock:
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(json.dumps(data, separators=(",", ":")) + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


TRACE = _Lines("trace")
WRITES = _Lines("writes")


def _since_epoch(unix: float) -> float:
    return unix - PLAN.epoch


@events.request.add_listener
def _on_request(
    response_time: float, response: Any, context: dict[str, Any], start_time: float = 0.0, **_: Any
) -> None:
    """Every request (each attempt) as a RequestCompleted event of the shared trace."""
    if "path" not in context:
        return
    status = int(getattr(response, "status_code", 0) or 0)
    latency = response_time / 1000.0
    event = RequestCompleted(
        t=_since_epoch(start_time) + latency,
        path=context["path"],
        cluster=context["cluster"],
        user=context["user"],
        verb=context["verb"],
        status=status,
        latency_seconds=latency,
    )
    TRACE.write(event.to_json())


@events.quitting.add_listener
def _on_quitting(**_: Any) -> None:
    TRACE.close()
    WRITES.close()


def _ssl_factory(target: Target) -> Any:
    def factory(**_: Any) -> Any:
        context = gevent.ssl.create_default_context(cafile=target.ca_file)
        if target.cert_file and target.key_file:
            context.load_cert_chain(certfile=target.cert_file, keyfile=target.key_file)
        return context

    return factory


class KubeUser(FastHttpUser):
    """A greenlet sending its share of every actor's requests (see `Arrivals`)."""

    host = "https://127.0.0.1"  # each request goes to its target's own URL
    wait_time = constant(0)

    def on_start(self) -> None:
        self.index = next(_GREENLETS)
        seed = f"{PLAN.run_id}/{PROCESS}/{self.index}"
        self.rng = random.Random(seed)
        self.arrivals = Arrivals(ACTORS, share=PLAN.users, rng=self.rng)
        self.budget = math.ceil(PLAN.max_requests / max(1, PLAN.users))
        self.sent = 0
        self.sessions: dict[str, FastHttpSession] = {}
        self.tokens: dict[str, str] = {}
        self.objects: dict[tuple[str, str, str], dict[str, dict[str, int]]] = {}
        self.seq = itertools.count(1)

    # -- pacing ----------------------------------------------------------------------------------

    @task
    def arrive(self) -> None:
        if self.sent >= self.budget or time.time() >= PLAN.stop_at:
            raise StopUser()
        t, actor = self.arrivals.next(_since_epoch(time.time()))
        if t >= self.arrivals.horizon or PLAN.epoch + t >= PLAN.stop_at:
            raise StopUser()
        gevent.sleep(max(0.0, PLAN.epoch + t - time.time()))
        if actor is None:
            return
        cluster = self.rng.choice(actor.clusters)
        target = PLAN.targets[(actor.entry.path, cluster, actor.user)]
        if actor.entry.stream is not None:
            self._open_stream(target, actor)
            return
        verb, size = pick_kind(actor.entry, self.rng)
        if verb in ("get", "list"):
            self._read(target, verb, size)
        else:
            self._write(target, verb, size)

    # -- HTTP --------------------------------------------------------------------------------------

    def _session(self, url: str, target: Target, *, fresh: bool = False) -> FastHttpSession:
        session = None if fresh else self.sessions.get(url)
        if session is None:
            session = FastHttpSession(
                base_url=url,
                request_event=self.environment.events.request,
                user=self,
                insecure=False,
                ssl_context_factory=_ssl_factory(target),
                network_timeout=PLAN.request_timeout_seconds,
                connection_timeout=PLAN.request_timeout_seconds,
                max_retries=0,
            )
            if not fresh:
                self.sessions[url] = session
        return session

    def _headers(self, target: Target, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if target.token_file:
            token = self.tokens.get(target.token_file)
            if token is None:
                token = self.tokens[target.token_file] = Path(target.token_file).read_text().strip()
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _call(
        self,
        target: Target,
        verb: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
    ) -> int:
        self.sent += 1
        url = self.rng.choice(target.urls)
        response = self._session(url, target).request(
            method,
            path,
            data=None if body is None else json.dumps(body),
            headers=self._headers(target, content_type if body is not None else None),
            name=f"{target.path} {verb}",
            context={"path": target.path, "cluster": target.cluster, "user": target.user, "verb": verb},
        )
        return int(getattr(response, "status_code", 0) or 0)

    def _read(self, target: Target, verb: str, size: int) -> None:
        base = configmaps(PLAN.namespace)
        if verb == "get":
            self._call(target, "get", "GET", f"{base}/{get_fixture_name(size)}")
        else:
            self._call(target, "list", "GET", f"{base}?labelSelector={_LIST_LABEL}%3D{size}")

    # -- writes, retried idempotently ---------------------------------------------------------------

    def _write(self, target: Target, verb: str, size: int) -> None:
        owned = self.objects.setdefault((target.path, target.cluster, target.user), {})
        if verb != "create" and not owned:
            verb = "create"  # nothing of ours to change yet
        name, state, method, path, body, content_type = self._prepare(verb, size, owned)
        attempts, status = 0, 0
        while True:
            attempts += 1
            status = self._call(target, verb, method, path, body=body, content_type=content_type)
            if acknowledged(verb, status, attempt=attempts) or classify(status) == "rejected":
                break
            backoff = 0.2 * attempts
            if attempts > PLAN.retries or time.time() + backoff >= PLAN.stop_at:
                break
            gevent.sleep(backoff)
        outcome = None if verb == "delete" else object_data(version=state["version"], pad_bytes=state["pad"])
        WRITES.write(
            write_record(
                t=_since_epoch(time.time()),
                process=PROCESS,
                path=target.path,
                cluster=target.cluster,
                user=target.user,
                verb=verb,
                name=name,
                status=status,
                attempts=attempts,
                outcome=outcome,
            )
        )
        if verb == "delete":
            owned.pop(name, None)
        elif verb != "create" or classify(status) != "rejected":
            owned[name] = state

    def _prepare(
        self, verb: str, size: int, owned: dict[str, dict[str, int]]
    ) -> tuple[str, dict[str, int], str, str, Any, str]:
        """(name, state after the write, method, API path, body, content type) of one write."""
        base = configmaps(PLAN.namespace)
        if verb == "create":
            name = f"{PLAN.run_id}-{PROCESS}-g{self.index}-{next(self.seq)}"
            state = {"version": 1, "pad": padding(size)}
            body = configmap_body(name=name, run_id=PLAN.run_id, version=1, pad_bytes=state["pad"])
            return name, state, "POST", base, body, "application/json"
        name = self.rng.choice(sorted(owned))
        if verb == "delete":
            return name, owned[name], "DELETE", f"{base}/{name}", None, "application/json"
        state = {"version": owned[name]["version"] + 1, "pad": owned[name]["pad"]}
        if verb == "update":
            body = configmap_body(
                name=name, run_id=PLAN.run_id, version=state["version"], pad_bytes=state["pad"]
            )
            return name, state, "PUT", f"{base}/{name}", body, "application/json"
        body = {"data": {"v": str(state["version"])}}
        return name, state, "PATCH", f"{base}/{name}", body, "application/merge-patch+json"

    # -- streams -----------------------------------------------------------------------------------

    def _open_stream(self, target: Target, actor: Actor) -> None:
        if _STREAMS["open"] >= PLAN.max_streams:
            return
        _STREAMS["open"] += 1
        self.sent += 1
        gevent.spawn(self._hold_stream, target, actor)

    def _hold_stream(self, target: Target, actor: Actor) -> None:
        kind = actor.entry.stream or "watch"
        until = min(time.time() + actor.entry.hold_seconds * PLAN.time_scale, PLAN.stop_at)
        held, breaks, tries = 0.0, 0, 0
        try:
            while time.time() < until - 0.5 and tries < 20:
                tries += 1
                remaining = until - time.time()
                opened = time.time()
                reason = ""
                url = self.rng.choice(target.urls)
                session = self._session(url, target, fresh=True)
                response = session.request(
                    "GET",
                    f"{configmaps(PLAN.namespace)}?watch=1&allowWatchBookmarks=true"
                    f"&timeoutSeconds={math.ceil(remaining)}",
                    headers=self._headers(target),
                    stream=True,
                    name=f"{target.path} watch",
                    context={
                        "path": target.path,
                        "cluster": target.cluster,
                        "user": target.user,
                        "verb": kind,
                    },
                )
                if classify(int(getattr(response, "status_code", 0) or 0)) == "ok":
                    reason = "closed by the server"
                    try:
                        with gevent.Timeout(remaining + 5):
                            for _chunk in response.iter_content(chunk_size=8192):
                                pass
                    except gevent.Timeout:
                        reason = ""
                    except Exception as e:
                        reason = type(e).__name__
                    held += time.time() - opened
                else:
                    reason = f"status {getattr(response, 'status_code', 0)}"
                if time.time() < until - 1.0:
                    breaks += 1
                    TRACE.write(
                        StreamBroken(
                            t=_since_epoch(time.time()),
                            path=target.path,
                            cluster=target.cluster,
                            user=target.user,
                            kind=kind,
                            reason=reason,
                        ).to_json()
                    )
                    gevent.sleep(0.5)
                else:
                    break
        finally:
            _STREAMS["open"] -= 1
            TRACE.write(
                StreamEnded(
                    t=_since_epoch(time.time()),
                    path=target.path,
                    cluster=target.cluster,
                    user=target.user,
                    kind=kind,
                    held_seconds=round(held, 6),
                    breaks=breaks,
                ).to_json()
            )
