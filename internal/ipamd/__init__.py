"""tke-ipamd: IP address management for containers.

allocator (pure policy: numbering, blocks, picking) -> blocks (a replica's view of a pool's
blocks and the compare-and-swap loops) -> ipam (the decisions: allocate, release, fixed
owners, GC, workloads) -> service (the gRPC servicer) -> server (wiring, listeners).
pools and bindings validate definitions; provisioning talks to the IP provider; errors are
the client-facing errors. Storage and providers are plugins (tke.plugins.ip_storage,
tke.plugins.ip_providers)."""
