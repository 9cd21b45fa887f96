"""Storage: the versioned key-value contract (store.py) and its leases (lease.py), etcd behind
them (etcd/), how a write cut off mid-flight is resolved (interrupted.py), and what is built on
them: keys that expire (ttl.py) and in-memory copies of small key ranges (mirror.py). The tests'
in-memory fake of the contract is tests/support/memory_store.py."""
