"""Cluster providers (entry point group `tke.cluster_providers`): baremetal installs
Kubernetes on the user's own machines over SSH; imported adopts an existing cluster."""
