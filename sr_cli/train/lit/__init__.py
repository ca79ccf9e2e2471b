"""LightningModules and the datamodule (they use models, losses, degradations, metrics, data)."""
