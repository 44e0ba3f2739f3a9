"""The sign-in pages' rendering: small server-rendered HTML, autoescaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi.responses import HTMLResponse

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def make_templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def render(templates: jinja2.Environment, name: str, status: int = 200, **context: Any
           ) -> HTMLResponse:
    html = templates.get_template(name).render(**context)
    # no-store: these pages carry one-time form tokens.
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
