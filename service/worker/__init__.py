"""The worker side of the service: models on a device, batches, per-stream state."""
