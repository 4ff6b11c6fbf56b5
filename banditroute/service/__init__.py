"""The HTTP service: the ASGI app, group commit, replicas (shared state, forwarding), metrics."""
