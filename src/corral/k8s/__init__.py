"""The only code in corral that talks to the Kubernetes API: kubeconfigs, a client, error mapping."""

from corral.k8s.client import KubeClient, Response, wait_for
from corral.k8s.kubeconfig import KubeConfig

__all__ = ["KubeClient", "KubeConfig", "Response", "wait_for"]
