"""Which tensors may leave a client, re-stated here independently of ``secure_fedsa.sharing``.

An auditor must not trust the code under audit to say what is allowed, so the mapping from
method to the tensor groups it shares is written down again (from the FedSA-LoRA, FedIT and
FFA-LoRA papers and docs/threat-model.md). The task head is never shared by any method.
"""

from __future__ import annotations

# method -> groups whose tensors may leave a client (as ciphertexts when encryption is on)
ALLOWED_GROUPS: dict[str, frozenset[str]] = {
    "fedsa": frozenset({"A"}),  # FedSA-LoRA: A aggregated; B and head local
    "fedit": frozenset({"A", "B"}),  # FedIT: FedAvg of both LoRA matrices
    "ffa": frozenset({"B"}),  # FFA-LoRA: A frozen at init, B aggregated
    "local": frozenset(),  # no communication
}


def tensor_group(name: str) -> str:
    """ "A", "B", "head" or "other" for a parameter name (peft LoRA naming)."""
    if ".lora_A." in name:
        return "A"
    if ".lora_B." in name:
        return "B"
    if name.startswith("head."):
        return "head"
    return "other"
