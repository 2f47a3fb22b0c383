"""adgen: text-to-image ad assets, from briefs to PNGs through Triton.

The small core lives here (errors, the tensor contract, captions and palette, latents,
paths, the one atomic writer, the one record reader); the stages are subpackages: adgen.serving.runtime (what runs inside Triton),
adgen.serving.jobs and adgen.prompting (bulk jobs, prompt expansion), adgen.training,
adgen.export, and adgen.cli on top. docs/design.md lists the layers; pyproject.toml's
import-linter contract checks them. Importing this package imports nothing else, because
`adgen repo build` copies the core and the runtime into every Triton python model.
"""
__version__ = "0.1.0"
