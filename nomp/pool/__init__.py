"""One coin's pool: its daemons, jobs, blocks and (later) ports and payments."""
