"""tke-ipamd: IP address management for containers."""
