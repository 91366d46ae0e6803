"""The Rancher-compatible server: v3 API, authentication proxy, cluster controllers (state in an upstream control plane)."""
