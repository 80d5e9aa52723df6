"""secure_fedsa: privacy-hardened federated fine-tuning with FedSA-LoRA."""

__version__ = "0.1.0"
