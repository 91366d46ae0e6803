"""Real Kubernetes control planes without containers: build the binaries, start and stop them.

`build` makes kube-apiserver, kube-controller-manager, kubectl, etcd and toxiproxy from the
pinned wrapper Go modules in ``go/`` beside it; the rest of this package runs them as
processes with generated PKI, one apiserver per downstream cluster of a scenario.
"""
