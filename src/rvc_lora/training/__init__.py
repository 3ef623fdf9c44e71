"""Training: the LightningModule, RVC losses, builders for Hydra, callbacks, the run driver."""
