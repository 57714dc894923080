"""NVIDIA Cosmos3 (omni world model): transformer, Wan2.2 VAE, prompt encoding, pipeline stages."""
