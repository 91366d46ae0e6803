"""Conformance of real nodes: Pods, Services, kubectl and node faults on kubelets and containerd."""
