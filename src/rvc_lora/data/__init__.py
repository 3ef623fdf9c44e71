"""Data: raw audio folder -> slices -> cached features -> training batches."""
