"""Versions of the prompts admins may edit: the system persona and the refusal texts.

The files in ``prompts/`` are the defaults; each save in the admin panel is a new version (who,
when, why), never an edit in place, so any earlier text can come back (``rollback``). The newest
version of a prompt is the one in effect (``assistant.live_prompts`` hands it to the workers).
A template must use exactly the variables its file declares, or it is refused (``PromptError``).
"""

from __future__ import annotations

import builtins
import tomllib
from pathlib import Path

from sqlalchemy import func, select

from assistant.errors import PromptError
from assistant.prompts import DEFAULT_PROMPTS_DIR, Prompt, PromptFile, PromptLibrary
from assistant.store.db import Store
from assistant.store.models import PersonaVersion

# What the worker says in its own words (the persona, refusals, a cut reply); the notices of
# the fairness limits are rendered by the edges and stay files for now.
EDITABLE_PREFIXES = ("refusal",)
EDITABLE_NAMES = ("system", "output_cut")


class Personas:
    def __init__(self, store: Store, base: PromptLibrary | None = None,
                 directory: Path = DEFAULT_PROMPTS_DIR) -> None:
        self.store = store
        self.directory = directory
        self.base = base or PromptLibrary.load(directory)

    def names(self) -> builtins.list[str]:
        """The prompts an admin may edit, the persona first."""
        names = self.base.names()
        refusals = [n for n in names if n.startswith(EDITABLE_PREFIXES)]
        return [n for n in EDITABLE_NAMES if n in names] + refusals

    def default(self, name: str) -> str:
        """The template in ``prompts/<name>.toml`` (what is in effect before any save)."""
        self._check_name(name)
        path = self.directory / f"{name}.toml"
        return PromptFile.model_validate(tomllib.loads(path.read_text("utf-8"))).template

    def variables(self, name: str) -> tuple[str, ...]:
        """The variables the prompt's template must use (``{name}`` placeholders)."""
        self._check_name(name)
        return self.base[name].variables

    def current(self, name: str) -> PersonaVersion | None:
        """The newest saved version, or None when the file's text is in effect."""
        with self.store.session() as session:
            return session.scalar(select(PersonaVersion).where(PersonaVersion.name == name)
                                  .order_by(PersonaVersion.id.desc()).limit(1))

    def template(self, name: str) -> str:
        """The text in effect: the newest version's, else the file's."""
        version = self.current(name)
        return version.template if version is not None else self.default(name)

    def newest(self) -> dict[str, PersonaVersion]:
        """The newest version of every prompt that has one (one query; for the workers)."""
        newest_ids = select(func.max(PersonaVersion.id)).group_by(PersonaVersion.name)
        with self.store.session() as session:
            rows = session.scalars(select(PersonaVersion)
                                   .where(PersonaVersion.id.in_(newest_ids)))
            return {row.name: row for row in rows}

    def save(self, name: str, template: str, author: str, comment: str = "") -> PersonaVersion:
        """Validate ``template`` against the file's variables and save it as the newest version.

        Raises ``PromptError`` (and saves nothing) for an unknown or non-editable prompt, or a
        template that is not valid or does not use exactly the declared variables.
        """
        self.validate(name, template)
        version = PersonaVersion(name=name, template=template, created_by=author,
                                 comment=comment[:500])
        with self.store.session() as session:
            session.add(version)
        return version

    def validate(self, name: str, template: str) -> Prompt:
        self._check_name(name)
        if not template.strip():
            raise PromptError(f"prompt {name!r}: the template is empty")
        spec = self.base[name]
        return Prompt(name, PromptFile(description=spec.description,
                                       variables=list(spec.variables), template=template))

    def history(self, name: str, limit: int = 50) -> builtins.list[PersonaVersion]:
        """Saved versions, newest first."""
        with self.store.session() as session:
            return builtins.list(session.scalars(
                select(PersonaVersion).where(PersonaVersion.name == name)
                .order_by(PersonaVersion.id.desc()).limit(limit)))

    def rollback(self, name: str, version_id: int, author: str) -> PersonaVersion:
        """Make an earlier version's text the newest again (as a new version)."""
        with self.store.session() as session:
            old = session.get(PersonaVersion, version_id)
            if old is None or old.name != name:
                raise PromptError(f"prompt {name!r} has no version {version_id}")
            text = old.template
        return self.save(name, text, author, comment=f"rollback to version {version_id}")

    def _check_name(self, name: str) -> None:
        if name not in self.names():
            raise PromptError(f"no editable prompt named {name!r}")
