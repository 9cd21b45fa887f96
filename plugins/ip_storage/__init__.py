"""IP storage plugins (entry point group `tke.ip_storage`): where tke-ipamd keeps pools,
bindings and allocations. `store` is the contract; `etcd` the default; `memory` the fake."""
