"""Tests of cni-switch and tke-ipamc, run as a container runtime runs them."""
