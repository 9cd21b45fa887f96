"""gRPC plumbing shared by every server: errors with details, the request interceptor, and
the server with health, reflection, TLS and graceful stop."""
