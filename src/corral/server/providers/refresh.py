"""The periodic user-attribute refresh: Rancher's settings, its schedule and one user's group refresh.

``auth-user-info-resync-cron`` (default ``0 0 * * *``, a standard five-field cron line or a descriptor such
as ``@every 5m``) says when every user is refreshed; ``auth-user-info-max-age-seconds`` (default 3600)
skips users refreshed more recently, unless forced. A group removed in the directory or on GitHub is
gone from the user's group principals after the next refresh that is due.
"""

from __future__ import annotations

import calendar
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from corral.server.providers.base import AuthProvider, Principal
from corral.server.providers.errors import ProviderConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_AGE_SECONDS",
    "DEFAULT_RESYNC_CRON",
    "SETTING_MAX_AGE",
    "SETTING_RESYNC_CRON",
    "CronSchedule",
    "GroupRefresh",
    "RefreshSettings",
    "parse_go_duration",
    "refresh_due",
    "refresh_groups",
]

SETTING_RESYNC_CRON: Final = "auth-user-info-resync-cron"
SETTING_MAX_AGE: Final = "auth-user-info-max-age-seconds"
DEFAULT_RESYNC_CRON: Final = "0 0 * * *"
DEFAULT_MAX_AGE_SECONDS: Final = "3600"

_DURATION_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNITS: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_MONTHS: Final = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS: Final = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_DESCRIPTORS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS: Final[tuple[tuple[str, int, int, Mapping[str, int]], ...]] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)


def parse_go_duration(text: str, *, setting: str = "duration") -> timedelta:
    """Go's time.ParseDuration for non-negative values: ``90s``, ``1h30m``, ``500ms``, ``0``."""
    if text == "0":
        return timedelta(0)
    position, seconds = 0, 0.0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if not match:
            raise ProviderConfigError(
                f"expected a duration such as 90s or 1h30m, got {text!r}", field_name=setting
            )
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not text:
        raise ProviderConfigError("expected a duration, got an empty value", field_name=setting)
    return timedelta(seconds=seconds)


def _parse_field(text: str, name: str, low: int, high: int, names: Mapping[str, int]) -> frozenset[int]:
    values: set[int] = set()

    def number(part: str) -> int:
        value = names.get(part.upper()) if part.upper() in names else int(part) if part.isdigit() else None
        if value is None or not low <= value <= high:
            raise ProviderConfigError(
                f"{name}: expected a value from {low} to {high}, got {part!r}", field_name=SETTING_RESYNC_CRON
            )
        return value

    for item in text.split(","):
        span, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ProviderConfigError(f"{name}: bad step {step_text!r}", field_name=SETTING_RESYNC_CRON)
            step = int(step_text)
        if span in ("*", "?"):
            start, end = low, high
        elif "-" in span:
            first, _, last = span.partition("-")
            start, end = number(first), number(last)
        else:
            start = number(span)
            end = high if step_text else start
        if start > end:
            raise ProviderConfigError(f"{name}: empty range {span!r}", field_name=SETTING_RESYNC_CRON)
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True, kw_only=True)
class CronSchedule:
    """A cron schedule as robfig/cron's ParseStandard reads it (UTC), or a fixed ``@every`` interval."""

    text: str
    every: timedelta | None = None
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    any_day: bool = True
    any_weekday: bool = True

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        line = text.strip()
        if line.startswith("@every "):
            every = parse_go_duration(line.removeprefix("@every ").strip(), setting=SETTING_RESYNC_CRON)
            if every < timedelta(seconds=1):
                raise ProviderConfigError("@every needs at least 1s", field_name=SETTING_RESYNC_CRON)
            return cls(text=line, every=every)
        fields = _DESCRIPTORS.get(line, line).split()
        if len(fields) != 5:
            raise ProviderConfigError(
                f"expected minute hour day-of-month month day-of-week, or a descriptor; got {text!r}",
                field_name=SETTING_RESYNC_CRON,
            )
        sets = [_parse_field(f, *spec) for f, spec in zip(fields, _FIELDS, strict=True)]
        return cls(
            text=line,
            minutes=sets[0],
            hours=sets[1],
            days=sets[2],
            months=sets[3],
            weekdays=sets[4],
            any_day=fields[2] in ("*", "?"),
            any_weekday=fields[4] in ("*", "?"),
        )

    def _day_matches(self, day: datetime) -> bool:
        in_month = day.day in self.days
        in_week = (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, moment: datetime) -> datetime:
        """The first activation strictly after ``moment`` (an aware datetime; the answer is in UTC)."""
        now = moment.astimezone(UTC)
        if self.every is not None:
            return (now + self.every).replace(microsecond=0)
        candidate = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = candidate + timedelta(days=366 * 5)
        while candidate < limit:
            if candidate.month not in self.months or not self._day_matches(candidate):
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
            elif candidate.hour not in self.hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0)
            elif candidate.minute not in self.minutes:
                candidate += timedelta(minutes=1)
            else:
                return candidate
        raise ProviderConfigError(f"{self.text!r} never fires", field_name=SETTING_RESYNC_CRON)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshSettings:
    """The two settings that drive the refresh; `from_settings` reads them by Rancher's names."""

    resync: CronSchedule | None
    """None when the cron setting is empty: no periodic refresh (logins still refresh)."""
    max_age: timedelta

    @classmethod
    def from_settings(cls, values: Mapping[str, str]) -> RefreshSettings:
        cron = values.get(SETTING_RESYNC_CRON, DEFAULT_RESYNC_CRON)
        max_age_text = values.get(SETTING_MAX_AGE, DEFAULT_MAX_AGE_SECONDS).strip()
        # Rancher appends "s" and parses a Go duration, so "3600" and "1.5" are seconds.
        max_age = parse_go_duration(f"{max_age_text}s" if max_age_text else "", setting=SETTING_MAX_AGE)
        return cls(resync=CronSchedule.parse(cron) if cron.strip() else None, max_age=max_age)


def refresh_due(
    *, last_refresh: datetime | None, now: datetime, max_age: timedelta, force: bool = False
) -> bool:
    """Rancher's max-age gate: refresh unless the last refresh is younger than ``max_age`` (or forced)."""
    if force or last_refresh is None:
        return True
    return now >= last_refresh + max_age


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRefresh:
    """One user's refreshed groups: what the server writes to the UserAttribute's GroupPrincipals."""

    user_id: str
    groups: tuple[Principal, ...]
    refreshed_at: datetime

    @property
    def group_ids(self) -> tuple[str, ...]:
        return tuple(group.id for group in self.groups)


async def refresh_groups(
    provider: AuthProvider, user_id: str, *, secret: str = "", now: datetime | None = None
) -> GroupRefresh:
    """Ask the provider for the user's current groups (errors propagate, typed, for the caller to record)."""
    groups = await provider.refresh(user_id, secret=secret)
    logger.debug("refreshed %s: %d group principals", user_id, len(groups))
    return GroupRefresh(user_id=user_id, groups=groups, refreshed_at=now or datetime.now(UTC))
