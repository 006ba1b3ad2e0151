"""Pure logic with no I/O: the planner, metric capture, command templates and failure
classes. Each depends on values (engine.model) alone, so it is tested in microseconds."""
