"""The only code in corral that talks to the Kubernetes API: kubeconfigs, a client, error mapping."""
