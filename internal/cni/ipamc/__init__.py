"""tke-ipamc: the CNI IPAM plugin that takes container addresses from tke-ipamd."""
