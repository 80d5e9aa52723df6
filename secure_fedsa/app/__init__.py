"""The application layer: the command line, sweeps and the "alone" baseline built on the library.

- ``cli``: argument parsing only; the work happens in the library.
- ``sweep``: many federations, one results table and curve.
- ``alone``: the honest baseline, each client training on its own without DP.

The core (model, data, privacy, crypto, secagg, site, server, engine) never imports this layer.
"""
