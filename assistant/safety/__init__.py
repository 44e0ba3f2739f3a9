"""Safety: an ordered chain of small checks on the input and the output (docs/safety.md)."""
