"""The HTTP API: one app, one router module per surface, load shedding and the ports' exposure.

``app``           :func:`~bandit.api.app.create_app`: routers, middleware, error handlers, lifespan
``native``        ``/v1`` rank, reward, activate, events, policies (the rank path)
``privacy``       ``/v1`` consent, export, erasure, page tokens; ``/v1/me`` and the page
``admin``         ``/v1`` policy settings, the kill switch, noisy reports and their ledger
``personalizer``  ``/personalizer/v1.0`` rank, reward, activate
``ops``           ``/healthz``, ``/readyz``, ``/metrics``
``deps``          the service behind the routes, who is calling, which policy
``errors``        JSON answers, errors, their OpenAPI declarations and handlers
``requestlog``    one count, latency and log line per request
``openapi``       the OpenAPI document, from the routes' declarations
``shedding``, ``exposure``, ``apidocs``: refusing before reading, the ports, ``/docs``

Which imports which: the routers import ``deps``, ``errors`` and
``requestlog`` (``privacy``, ``admin`` and ``personalizer`` also ``native``'s rank path);
only ``app`` imports the routers.
"""

__all__: list[str] = []
