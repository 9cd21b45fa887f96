"""Plugin loading shared by every binary: a plugin is named by its entry point or as
"module:Class"."""
