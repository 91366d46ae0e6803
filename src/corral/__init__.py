"""corral: simulation and conformance test framework for Rancher-style multi-cluster management.

The installed package holds the shared model of the world (`corral.model`: scenarios in, traces
out), the reference implementation (control planes in `corral.controlplane` and `corral.k8s`, the
remotedialer-compatible tunnel in `corral.tunnel`, the server in `corral.server`, the agents in
`corral.agent`, kube-api-auth in `corral.kubeapiauth`, whole topologies in `corral.run`), the SimPy
model (`corral.sim`), the trace checks, load runs and reports. docs/architecture.md maps the parts.
"""

from corral.errors import ConfigError, CorralError

__all__ = ["ConfigError", "CorralError", "__version__"]

__version__ = "0.1.0"
