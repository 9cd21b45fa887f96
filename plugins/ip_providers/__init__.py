"""IP provider plugins (entry point group `tke.ip_providers`): the environment's source of
addresses. `provider` is the contract; `static` serves private clouds; `vpc` a cloud VPC API."""
