"""Tests of the storage seam: the Store and LeasedStore contracts, run against every
implementation (etcd, and the in-memory fake the unit tests use)."""
