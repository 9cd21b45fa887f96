"""What the tests and the benchmarks share: real servers they start (etcd, sshd, the platform's
servers in-process or as processes), plugins loaded by "module:Class", and fakes of the seams'
Protocols. None of it is shipped: the installed package holds only the product."""

from pathlib import Path

# The repository root: the working directory of child processes that load modules of tests/
# (for example a test plugin named "tests.support.controller:RecordingProvider").
REPO = Path(__file__).resolve().parents[2]

# The tests' machines (sshd servers) and Kubernetes API stand-ins listen on loopback, which
# tke-apiserver and tke-controller refuse as a tenant's address by default: every test
# configuration allows it explicitly, as a lab would ([machines] allowed_networks).
LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]
