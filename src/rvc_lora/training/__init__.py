"""Training: RVC's losses (and, later, the LightningModule)."""
