"""Real servers for tests, benchmarks and local runs (etcd, the platform binaries)."""
