"""The one training loop (Trainer), EMA and safetensors checkpoints."""
