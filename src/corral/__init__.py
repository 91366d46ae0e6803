"""corral: simulation and conformance test framework for Rancher-style multi-cluster management.

The installed package holds the shared model of the world (`corral.model`: scenarios in, traces
out) and the parts of the reference implementation built so far: real control planes
(`corral.controlplane`, `corral.k8s`) and the remotedialer-compatible tunnel (`corral.tunnel`).
docs/architecture.md says what each part does and what is still planned.
"""

from corral.errors import ConfigError, CorralError

__all__ = ["ConfigError", "CorralError", "__version__"]

__version__ = "0.1.0"
