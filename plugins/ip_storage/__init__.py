"""IP storage plugins (entry point group `tke.ip_storage`): where tke-ipamd keeps pools,
bindings and allocations. The contract is tke.internal.ipamd.storage; `etcd` is the default (the
tests' in-memory fake is tests/support/memory_ip_storage.py)."""
