"""The Celery side: the app, thin tasks, and the llama.cpp engine (one per process)."""
