"""The node's CNI plugins: cni-switch and tke-ipamc."""
