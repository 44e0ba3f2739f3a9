"""The semantic harmful-request check's data and head: where the training and development
sets come from (``sources``), how the head is fitted (``fit``) and scored (``head``).
See docs/safety.md, "The semantic check"."""
