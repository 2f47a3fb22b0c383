"""adgen.serving.runtime: what runs inside a Triton python model (backend, text encoder,
execution providers): only what Triton runs. Torch-free; `adgen repo build` copies it with
the core."""
