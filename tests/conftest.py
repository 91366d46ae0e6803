"""Settings of the fast tests: hypothesis for shared noisy machines, and pytester for the plugin tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

# The machines are shared and noisy: no per-example deadline, and no failure merely because
# generating data was slow while another process held the CPU. Failures stay failures.
settings.register_profile("corral", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("corral")
