"""Flower 1.42 deployment: a ServerApp and a ClientApp over the same client and server code.

These are the only modules of secure_fedsa that import ``flwr``. The ClientApp builds a
:class:`secure_fedsa.site.client.Client` for its site (:func:`secure_fedsa.site.build.build_site`);
the ServerApp adds the sites' updates with :class:`secure_fedsa.server.aggregator.Aggregator`.
Updates and aggregates travel as opaque byte arrays; the secret key, B, the head and the privacy
ledger stay in the site's own files. See docs/deployment.md.
"""
