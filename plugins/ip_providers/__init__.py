"""IP provider plugins (entry point group `tke.ip_providers`): the environment's source of
addresses. The contract is tke.internal.ipamd.provider; `static` serves private clouds, `vpc` a
cloud VPC API."""
