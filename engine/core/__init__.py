"""Pure logic with no I/O: planning, metric capture, sweep expansion, failure classes."""
