"""Add-ons the platform installs into the clusters it builds, as Kubernetes objects rendered per
cluster (network.py: the pod network) and applied through the cluster's API with server-side
apply, then followed until their workloads are rolled out (rollout.py). Any cluster provider
uses them through `rollout.ensure_network(...)` in a step of its own."""
