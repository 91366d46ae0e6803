"""Conformance of corral's local control planes: real kube-apiservers behave as Kubernetes does."""
