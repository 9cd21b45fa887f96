"""The tke distribution: generated contracts (tke.meta, tke.platform, tke.ipam) and, mapped
under it, the binaries (tke.cmd), the implementation (tke.internal) and plugins (tke.plugins)."""
