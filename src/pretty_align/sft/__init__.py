"""LoRA SFT baseline builder (SPEC §7). So far: the training-data pipeline (``data``)."""
