from pathlib import Path

import pytest

from assistant.errors import PromptError
from assistant.prompts import Prompt, PromptFile, PromptLibrary


def write(directory: Path, name: str, body: str) -> None:
    (directory / f"{name}.toml").write_text(body, encoding="utf-8")


def test_shipped_prompts_load_and_render(prompts: PromptLibrary) -> None:
    assert {"system", "summary_section", "summarise", "dead_letter"} <= set(prompts.names())
    text = prompts.render("system", assistant_name="Ada", platform="slack", today="2026-01-01",
                          summary="")
    assert "Ada" in text and "slack" in text and "2026-01-01" in text


def test_missing_variable_is_an_error(prompts: PromptLibrary) -> None:
    with pytest.raises(PromptError, match="missing variable"):
        prompts.render("system", assistant_name="Ada", platform="web", today="x")


def test_unknown_variable_is_an_error(prompts: PromptLibrary) -> None:
    with pytest.raises(PromptError, match="unknown variable"):
        prompts.render("dead_letter", mood="sad")


def test_undeclared_placeholder_is_refused_at_load(tmp_path: Path) -> None:
    write(tmp_path, "bad", 'description = "x"\nvariables = ["a"]\ntemplate = "{a} {b}"\n')
    with pytest.raises(PromptError, match="declares"):
        PromptLibrary.load(tmp_path)


def test_unknown_key_is_refused_at_load(tmp_path: Path) -> None:
    write(tmp_path, "bad", 'description = "x"\nvariables = []\ntemplate = "hi"\ncolour = 1\n')
    with pytest.raises(PromptError, match="colour"):
        PromptLibrary.load(tmp_path)


def test_broken_toml_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "bad", 'description = "x\n')
    with pytest.raises(PromptError, match="bad.toml"):
        PromptLibrary.load(tmp_path)


def test_unknown_prompt_name(prompts: PromptLibrary) -> None:
    with pytest.raises(PromptError, match="no prompt named"):
        prompts["nope"]


@pytest.mark.parametrize("template", [
    "Hi {}", "Hi {0}", "Hi {user.__class__}", "Hi {user[0]}", "Hi {name:{width}}", "Hi {name",
    "Hi name}",
])
def test_a_template_that_could_reach_into_its_values_or_is_malformed_is_refused(
        template: str) -> None:
    """Persona templates are published from the admin panel: positional fields, attribute or
    index access and nested fields are refused when the prompt is loaded, as langchain's
    f-string templates refuse them."""
    with pytest.raises(PromptError):
        Prompt("persona", PromptFile(description="d", variables=["name"], template=template))


def test_a_template_fills_its_named_fields_and_keeps_doubled_braces() -> None:
    prompt = Prompt("greeting", PromptFile(description="d", variables=["name"],
                                           template="Hello {name}! {{literal}} {name!r:>8}"))
    assert prompt.render(name="Ann") == "Hello Ann! {literal}    'Ann'"
