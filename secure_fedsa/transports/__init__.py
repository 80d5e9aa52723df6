"""Transports: how the round engine's messages move between sites and the server.

- ``inprocess``: direct calls, every site and the server in one process.
- ``federation``: the in-process federation, the default way to run (``run_federation``).
- ``flower``: the Flower 1.42 ServerApp and ClientApp (the only code that imports ``flwr``).

The rounds themselves (phases, records, summary) are ``secure_fedsa.engine``'s; a transport only
delivers its messages.
"""
