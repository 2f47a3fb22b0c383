"""adgen.serving.jobs: prompt files, bulk jobs, the Triton client and local engine, creatives,
and the local tritonserver launcher."""
