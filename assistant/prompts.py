"""Prompts are data files in ``prompts/``: validated when loaded, filled from named variables.

Each ``prompts/<name>.toml`` holds ``description``, ``variables`` (the names it needs) and
``template`` (``{name}`` placeholders). Unknown keys, undeclared placeholders and missing
variables are errors, never an empty string.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from langchain_core.prompts import PromptTemplate
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


class Prompt:
    """One validated prompt template."""

    def __init__(self, name: str, spec: PromptFile) -> None:
        self.name = name
        self.description = spec.description
        self.variables = tuple(spec.variables)
        try:
            self._template = PromptTemplate.from_template(spec.template)
        except Exception as exc:  # langchain raises ValueError/KeyError on bad braces
            raise PromptError(f"prompt {name!r}: invalid template: {exc}") from exc
        used = set(self._template.input_variables)
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
        return self._template.format(**values)


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
