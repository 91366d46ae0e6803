"""The Rancher-compatible server: v3 API, authentication proxy and cluster controllers.

Its state lives in an upstream control plane, as Rancher keeps it in its local cluster.
"""
