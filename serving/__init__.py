"""adgen.serving: runtime (what runs inside Triton) and jobs (clients, bulk jobs, servers)."""
