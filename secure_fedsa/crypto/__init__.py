"""CKKS secure aggregation: parameters, key bundles, compact ciphertext chunks and codecs.

Modules (import what you need; this package imports nothing, so that the server side never
loads client code):

- ``params``: :class:`CKKSParams`, validated against the 128-bit security table.
- ``keys``: ``client.keys`` / ``server.keys`` bundles and the key fingerprint.
- ``codec``: the client- and server-side codec protocols.
- ``ckks_client``: encrypt and decrypt (holds the secret key). Never imported by the server.
- ``ckks_server``: validate and add ciphertexts (no key material).
- ``plaintext``: the same interface without encryption.
- ``chunks``, ``packing``, ``seal_io``: the compact ciphertext format and its plumbing.
"""
