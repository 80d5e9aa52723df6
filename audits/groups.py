"""Which tensors may leave a client, re-stated here independently of ``secure_fedsa.model.sharing``.

An auditor must not trust the code under audit to say what is allowed, so the mapping from
method to the tensor groups it shares is written down again (from the FedSA-LoRA, FedIT and
FFA-LoRA papers and docs/threat-model.md). The task head is shared only by a run whose
``config.json`` says ``head: shared`` (the paper's baselines), and never by ``local``.
"""

from __future__ import annotations

# method -> groups whose tensors may leave a client (as ciphertexts when encryption is on)
ALLOWED_GROUPS: dict[str, frozenset[str]] = {
    "fedsa": frozenset({"A"}),  # FedSA-LoRA: A aggregated; B and head local
    "fedit": frozenset({"A", "B"}),  # FedIT: FedAvg of both LoRA matrices
    "ffa": frozenset({"B"}),  # FFA-LoRA: A frozen at init, B aggregated
    "local": frozenset(),  # no communication
}


def allowed_groups(method: str, head: str | None) -> frozenset[str] | None:
    """The groups ``method`` may send, with the head when the run shares it (None: unknown
    method or head setting)."""
    if method not in ALLOWED_GROUPS or head not in (None, "local", "shared"):
        return None
    groups = ALLOWED_GROUPS[method]
    if head == "shared" and groups:
        return groups | {"head"}
    return groups


def tensor_group(name: str) -> str:
    """ "A", "B", "head" or "other" for a parameter name (peft LoRA and VeRA naming: VeRA's
    lambda_d scales the A side, lambda_b the B side)."""
    if ".lora_A." in name or ".vera_lambda_d" in name:
        return "A"
    if ".lora_B." in name or ".vera_lambda_b" in name:
        return "B"
    if name.startswith("head."):
        return "head"
    return "other"


# the adapter kinds and the tensor names each gives its A and B sides (peft naming)
ADAPTER_MARKERS: dict[str, tuple[str, str]] = {
    "lora": (".lora_A.", ".lora_B."),
    "rslora": (".lora_A.", ".lora_B."),  # LoRA with alpha/sqrt(r) scaling: the same tensors
    "vera": (".vera_lambda_d", ".vera_lambda_b"),
}


def adapter_module(name: str) -> str | None:
    """The module an adapter tensor belongs to (``...attention.self.query``), None for others."""
    for marker in (".lora_A.", ".lora_B.", ".vera_lambda_d", ".vera_lambda_b"):
        if marker in name:
            return name.split(marker, 1)[0]
    return None
