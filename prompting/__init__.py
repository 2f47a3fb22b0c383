"""adgen.prompting: briefs -> prompts (offline grounded expander, LLM transport, vocabulary)
and ad copy."""
