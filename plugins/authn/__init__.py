"""Authentication plugins (entry point group tke.authn)."""
