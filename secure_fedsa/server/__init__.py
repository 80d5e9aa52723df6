"""The server layer: validate every update completely, then add ciphertexts. Never decrypts.

- ``aggregator``: the aggregation server. It imports no site code and holds no secret key.
"""
