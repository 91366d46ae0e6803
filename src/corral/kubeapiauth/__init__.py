"""The Authorized Cluster Endpoint: kube-api-auth, the downstream objects it reads, and their sync.

A cluster with ACE authenticates Rancher-style tokens itself: its kube-apiserver asks kube-api-auth
(`corral.kubeapiauth.server`) through a token webhook, which checks copies of the cluster-scoped tokens
(`corral.kubeapiauth.objects`) that the server's cluster controller writes (`corral.kubeapiauth.sync`).
`corral.kubeapiauth.kubeconfig` adds the direct contexts to a user's kubeconfig. The package builds
on corral.auth, corral.k8s and corral.model only, so the server and `corral up` plug it in.
"""
