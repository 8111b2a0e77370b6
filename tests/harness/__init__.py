"""Native test harness: runs the stack's real programs with the repo's own config files."""
