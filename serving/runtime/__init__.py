"""adgen.serving.runtime: what runs inside a Triton python model (backend, text encoder,
images, execution providers). Torch-free; `adgen repo build` copies it with the core."""
