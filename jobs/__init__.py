"""One short module per job: parse config → call engine → exit code (DESIGN.md: Jobs and their interface)."""
