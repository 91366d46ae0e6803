"""What a conformance test records for its readers: allure steps with redacted request and answer
summaries, and figures. Without an allure results folder these are no-ops, so tests call them freely."""

from __future__ import annotations

import json
from pathlib import Path

import allure

from conformance.targets import Exchange
from corral.report.redact import redact_exchange


def attach_exchange(exchange: Exchange, *, secrets: tuple[str, ...] = ()) -> None:
    """An allure step named ``METHOD url -> status`` holding the redacted exchange as JSON."""
    summary = redact_exchange(
        method=exchange.method,
        url=exchange.url,
        status=exchange.status,
        request_headers=exchange.request_headers,
        request_body=exchange.request_body,
        response_body=exchange.response_body,
        seconds=exchange.seconds,
        secrets=secrets,
    )
    title = f"{exchange.method} {summary['request']['url']} -> {exchange.status}"
    with allure.step(title):
        allure.attach(json.dumps(summary, indent=2), name=title, attachment_type=allure.attachment_type.JSON)


def attach_figure(path: Path, *, name: str = "") -> None:
    """A PNG figure (a latency plot, a failover timeline) attached to the current test."""
    allure.attach.file(str(path), name=name or path.stem, attachment_type=allure.attachment_type.PNG)
