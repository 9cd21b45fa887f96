"""Storage: the versioned key-value contract (store.py), etcd behind it (etcd/), leases and
expiring writes (lease.py, ttl.py), and how a write cut off mid-flight is resolved
(interrupted.py). The in-memory fake of the contract is tests/support/memory_store.py."""
