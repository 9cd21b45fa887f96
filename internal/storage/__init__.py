"""Storage: the versioned key-value contract (store.py), etcd behind it (etcd/), and an
in-memory fake (memory.py)."""
