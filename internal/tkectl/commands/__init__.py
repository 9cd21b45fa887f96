"""tkectl's verbs, one module per group: reading (get, describe, watch), writing (create, apply,
edit, delete), the session (login, logout) and the configuration (config ...)."""
