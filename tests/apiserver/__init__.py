"""Tests of tke-apiserver against a real etcd over real gRPC."""
