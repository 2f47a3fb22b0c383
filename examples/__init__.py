"""Demo inputs (briefs, prompts) shipped as package data, and examples/call_triton.py."""
