"""The machinery of tke.meta.v1's objects, shared by every component: the Resource shape of
every kind, and labels and their selectors."""
