"""The HTTP service: the ASGI app and its handlers (``app``), the request/response primitives
(``asgi``), a replica's settings (``config``) and wiring (``replica``), group commit,
replicas sharing state (``shared_state``) and forwarding outcomes (``forwarding``), rollout
commands over HTTP (``rollout_api``) and across replicas (``rollout_store``), metrics and the
OpenAPI description. ``banditroute serve`` (:mod:`banditroute.cli.serve`) runs it."""
