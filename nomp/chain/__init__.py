"""Block templates, coinbases, merkle branches, jobs and blocks: pure code."""
