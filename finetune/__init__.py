"""Learning side of supportbot: base-model preparation and LoRA adapter training."""
