"""The assistant's core: envelope, pipeline, memory, prompts, settings, errors, engine interface.

Nothing here imports a platform SDK, Celery, a web framework or llama_cpp (a test enforces it).
"""

__version__ = "0.1.0"
