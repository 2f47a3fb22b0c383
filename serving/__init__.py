"""adgen's torch-free runtime: contract, text encoding, latents, clients and serving logic."""
__version__ = "0.1.0"
