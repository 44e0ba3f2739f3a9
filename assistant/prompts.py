"""Prompts are data files in ``prompts/``: validated when loaded, filled from named variables.

Each ``prompts/<name>.toml`` holds ``description``, ``variables`` (the names it needs) and
``template`` (``{name}`` placeholders). Unknown keys, undeclared placeholders and missing
variables are errors, never an empty string.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from string import Formatter

# langchain's keyword-only formatter, the one its PromptTemplate formats f-strings with.
# PromptTemplate itself is not imported: its module pulls in langsmith's tracers (+19 MB of
# memory and ~370 modules in every worker process for what is one str.format here).
from langchain_core.utils.formatting import formatter
from pydantic import BaseModel, ConfigDict, ValidationError

from assistant.errors import PromptError

# prompts/ at the top of the checkout, shipped as package data through the link
# assistant/prompt_files: the same files in a checkout and in an installed wheel.
DEFAULT_PROMPTS_DIR = Path(str(resources.files("assistant").joinpath("prompt_files")))


class PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    variables: list[str]
    template: str


def template_variables(template: str) -> set[str]:
    """The ``{name}`` placeholders of ``template``, checked as langchain checks an f-string
    template: unbalanced braces, positional (``{}``, ``{0}``), attribute or index access
    (``{user.__class__}``, ``{a[0]}``) and nested format specifications are errors (a
    ValueError), so a published persona cannot reach into the objects it is filled with."""
    names: set[str] = set()
    for _literal, field, spec, _conversion in Formatter().parse(template):
        if field is None:
            continue
        if not field or field.isdigit():
            raise ValueError(f"positional placeholder {{{field}}}: use a name")
        if any(mark in field for mark in ".[]"):
            raise ValueError(f"placeholder {{{field}}}: no attribute access or indexing")
        if spec and ("{" in spec or "}" in spec):
            raise ValueError(f"placeholder {{{field}}}: nested replacement fields")
        names.add(field)
    return names


class Prompt:
    """One validated prompt template."""

    def __init__(self, name: str, spec: PromptFile) -> None:
        self.name = name
        self.description = spec.description
        self.variables = tuple(spec.variables)
        try:
            used = template_variables(spec.template)
        except ValueError as exc:
            raise PromptError(f"prompt {name!r}: invalid template: {exc}") from exc
        self._template = spec.template
        declared = set(self.variables)
        if used != declared:
            raise PromptError(
                f"prompt {name!r}: template uses {sorted(used)} "
                f"but declares {sorted(declared)}"
            )

    def render(self, **values: object) -> str:
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise PromptError(f"prompt {self.name!r}: missing variable(s) {missing}")
        extra = [k for k in values if k not in self.variables]
        if extra:
            raise PromptError(f"prompt {self.name!r}: unknown variable(s) {extra}")
        return formatter.format(self._template, **values)


class PromptLibrary:
    """All prompts of a directory, loaded and validated at once."""

    def __init__(self, prompts: dict[str, Prompt]) -> None:
        self._prompts = prompts

    @classmethod
    def load(cls, directory: Path = DEFAULT_PROMPTS_DIR) -> PromptLibrary:
        prompts: dict[str, Prompt] = {}
        for path in sorted(directory.glob("*.toml")):
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
                spec = PromptFile.model_validate(data)
            except (tomllib.TOMLDecodeError, ValidationError) as exc:
                raise PromptError(f"{path}: {exc}") from exc
            prompts[path.stem] = Prompt(path.stem, spec)
        if not prompts:
            raise PromptError(f"no prompt files in {directory}")
        return cls(prompts)

    def __getitem__(self, name: str) -> Prompt:
        try:
            return self._prompts[name]
        except KeyError:
            raise PromptError(f"no prompt named {name!r}") from None

    def render(self, name: str, **values: object) -> str:
        return self[name].render(**values)

    def names(self) -> list[str]:
        return sorted(self._prompts)
