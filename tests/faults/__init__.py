"""Fault tests: etcd members killed, hung and partitioned, servers restarted under load."""
