"""Kubernetes parameter generation: PKI (cluster CA, component certificates with the right
SANs, service account keys), kubeconfigs, and kubeadm-style and kubelet configuration with
the cluster's extra args. Pure functions of the cluster spec and the keys they are given."""
