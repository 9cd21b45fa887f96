"""Authorization plugins (entry point group tke.authz)."""
