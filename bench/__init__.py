"""Speed of the assistant: llama.cpp called directly vs. the same request through the pipeline.

``python -m bench`` (``make bench``) runs both in one process, one after the other, for the same
prompt, model, thread count and sampling, and writes ``bench/results.json``. See
``docs/benchmarks.md`` for what is measured and how to read the numbers.
"""
