"""Machine providers (entry point group `tke.machine_providers`): baremetal joins the user's
own machines to a cluster over SSH, and drains and removes them."""
