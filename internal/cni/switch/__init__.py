"""cni-switch: a CNI meta plugin that configures no network itself and delegates each
container to one of the networks it names (explicit choice, workload binding, or default)."""
