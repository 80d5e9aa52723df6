"""Secure aggregation (promise P8): pairwise masks over CKKS ciphertexts, with dropout recovery.

- ``protocol``: one round of the masking protocol, client and server side (Bonawitz et al.).
- ``masking``: the masks themselves: X25519 agreement, PRG expansion, ciphertext masking.
- ``shamir``: Shamir secret sharing of the mask secrets.
- ``threshold``: the Shamir threshold and the floor a lying server requires.
- ``site_policy``: what a site itself requires of every round, whatever the server says.

How a Flower SuperNode keeps a round's secrets in memory is transport code:
``secure_fedsa.transports.flower.secagg_records`` (it imports Flower; nothing here does).
"""
