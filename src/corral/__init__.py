"""corral: simulation and conformance test framework for Rancher-style multi-cluster management.

The installed package holds the reference implementation and the shared model of the world
(`corral.model`): scenarios in, traces out. See README.md for the tour.
"""

from corral.errors import ConfigError, CorralError

__all__ = ["ConfigError", "CorralError", "__version__"]

__version__ = "0.1.0"
