"""``assistant kb``: the knowledge base from the command line (docs/knowledge.md).

``add`` indexes in this process (the panel's uploads go to the workers' queue instead).
"""

from __future__ import annotations

from pathlib import Path

import click

from assistant.errors import AssistantError
from assistant.knowledge import knowledge_embedder
from assistant.knowledge.ingest import Limits, ingest, read_file, reembed_collection
from assistant.knowledge.parse import FORMATS
from assistant.knowledge.store import KnowledgeBase
from assistant.settings import Settings
from assistant.store import shared_store

DEFAULT_COLLECTION = "default"


def _kb() -> tuple[KnowledgeBase, Settings]:
    settings = Settings()
    try:
        return KnowledgeBase(shared_store(settings.sql_url)), settings
    except Exception as exc:
        raise click.ClickException(f"cannot open the store: {exc}") from exc


def _files(paths: tuple[Path, ...]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in FORMATS)
        else:
            found.append(path)
    return found


@click.group("kb")
def kb_group() -> None:
    """The knowledge base: documents the assistant answers from, with citations."""


@kb_group.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--collection", "-c", default=DEFAULT_COLLECTION, show_default=True)
@click.option("--attach", "places", multiple=True, metavar="PLACE",
              help="Let this place use the collection: slack:TEAM:CHANNEL, telegram:CHAT, "
                   "web, key:PREFIX… (repeatable).")
def kb_add(paths: tuple[Path, ...], collection: str, places: tuple[str, ...]) -> None:
    """Index files (PDF, DOCX, Markdown, HTML, text; folders are searched) into a collection.
    A file added again replaces its earlier chunks."""
    kb, settings = _kb()
    limits = Limits(max_bytes=int(settings.knowledge_max_mb * 1024 * 1024))
    embedder = knowledge_embedder()
    failed = 0
    for path in _files(paths):
        try:
            document = ingest(kb, embedder, collection, str(path.resolve()),
                              read_file(path, limits), limits)
        except AssistantError as exc:
            failed += 1
            click.echo(f"failed  {path}: {exc}", err=True)
            continue
        click.echo(f"indexed {path}: {document.chunk_count} chunk(s), {document.pages} "
                   f"page(s), \"{document.title}\"")
    try:
        for place in places:
            kb.attach(collection, place)
    except AssistantError as exc:
        raise click.ClickException(str(exc)) from exc
    if failed:
        raise click.ClickException(f"{failed} file(s) not indexed")


@kb_group.command("reembed")
@click.option("--collection", "-c", default=None,
              help="Only this collection (also when it was embedded with this model).")
def kb_reembed(collection: str | None) -> None:
    """Embed the chunks of every collection made with another embedding model again (after an
    upgrade changed the model: until then those collections are not searched)."""
    kb, _ = _kb()
    embedder = knowledge_embedder()
    names = ([collection] if collection is not None else
             [c.name for c in kb.collections() if c.embedding_model != embedder.model_id])
    if not names:
        click.echo(f"every collection is embedded with {embedder.model_id}")
    for name in names:
        try:
            count = reembed_collection(kb, embedder, name)
        except AssistantError as exc:
            raise click.ClickException(f"{name}: {exc}") from exc
        click.echo(f"embedded {name} again: {count} chunk(s), {embedder.model_id}")


@kb_group.command("list")
@click.option("--collection", "-c", default=None, help="Only this collection's documents.")
def kb_list(collection: str | None) -> None:
    """Collections (with the places that use them) and their documents."""
    kb, _ = _kb()
    for found in kb.collections():
        if collection is not None and found.name != collection:
            continue
        places = ", ".join(found.places) or "nowhere yet (kb attach)"
        click.echo(f"{found.name}: {found.documents} document(s), {found.chunks} chunk(s); "
                   f"used in {places}")
        for document in kb.documents(found.name):
            note = f" ({document.error})" if document.error else ""
            click.echo(f"  [{document.id}] {document.status:<8} {document.chunk_count:>5} "
                       f"chunk(s)  {document.source}{note}")


@kb_group.command("remove")
@click.argument("documents", nargs=-1, required=True)
@click.option("--collection", "-c", default=DEFAULT_COLLECTION, show_default=True)
def kb_remove(documents: tuple[str, ...], collection: str) -> None:
    """Delete documents (by path as added, or by the id `kb list` shows) with their chunks."""
    kb, _ = _kb()
    known = kb.documents(collection)
    missing = 0
    for wanted in documents:
        resolved = str(Path(wanted).resolve())
        match = [d for d in known if str(d.id) == wanted or d.source in (wanted, resolved)]
        if not match:
            missing += 1
            click.echo(f"not found in {collection}: {wanted}", err=True)
        for document in match:
            kb.delete_document(document.id)
            click.echo(f"removed {document.source}")
    if missing:
        raise click.ClickException(f"{missing} document(s) not found")


@kb_group.command("attach")
@click.argument("collection")
@click.argument("place")
def kb_attach(collection: str, place: str) -> None:
    """Let conversations at PLACE use COLLECTION (docs/knowledge.md, "Places")."""
    kb, _ = _kb()
    try:
        kb.attach(collection, place)
    except AssistantError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{collection} is used in {place}")


@kb_group.command("detach")
@click.argument("collection")
@click.argument("place")
def kb_detach(collection: str, place: str) -> None:
    kb, _ = _kb()
    if not kb.detach(collection, place):
        raise click.ClickException(f"{collection} was not attached to {place}")
    click.echo(f"{collection} is no longer used in {place}")


@kb_group.command("drop")
@click.argument("collection")
def kb_drop(collection: str) -> None:
    """Delete a whole collection: its documents, chunks and places."""
    kb, _ = _kb()
    if not kb.remove_collection(collection):
        raise click.ClickException(f"no collection named {collection!r}")
    click.echo(f"dropped {collection}")
