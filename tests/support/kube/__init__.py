"""A Kubernetes API server stand-in that speaks the real wire format, for tests and demos.

No real kube-apiserver can run on these machines, and the mocks on PyPI do not keep resource
versions, watches or apply; so this is ours. It serves over HTTPS the resources of
catalog.py with kube-apiserver's URLs, verbs, JSON and Status errors; authenticates client
certificates and bearer tokens and authorizes with RBAC (rbac.py); keeps one resource version
counter and a bounded watch history (store.py); implements the API's generic semantics and the
controllers' bits that tests lean on (registry.py, disruption.py); applies the four PATCH
types (patches.py, managed.py); and validates every object against Kubernetes' own OpenAPI
schemas (validation.py). docs/testing.md says what it approximates.

In tests: `tests.support.kube.running.running(directory)`; as a process:
`python -m tests.support.kube --help`."""
