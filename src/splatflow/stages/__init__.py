"""Stage functions: one module per pipeline stage (see docs/STAGES.md)."""
