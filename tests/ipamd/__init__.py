"""Tests of tke-ipamd: allocator policy, IP storage (memory and etcd), the service over real
gRPC, daemons over real etcd, and the IP providers."""
