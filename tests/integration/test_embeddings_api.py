"""``/v1/embeddings`` with the official ``openai`` client against a real web server: vectors
from the local embedding component that rank meaning, and OpenAI's errors for what is refused."""

from __future__ import annotations

import math

import httpx
import openai
import pytest

from assistant.embedding import MINILM_ID
from tests.auxil.stack import Stack

pytestmark = pytest.mark.integration


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_the_openai_client_gets_vectors_that_rank_meaning(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused")
    # The client asks for base64 by default and decodes it: that path is the one tested here.
    result = client.embeddings.create(model=MINILM_ID, input=[
        "How do I reset my password?", "I forgot my login password", "The cat sat on the mat"])
    vectors = [item.embedding for item in result.data]
    assert [item.index for item in result.data] == [0, 1, 2]
    assert all(len(vector) == 384 for vector in vectors)
    assert all(abs(cosine(vector, vector) - 1) < 1e-4 for vector in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert result.usage.prompt_tokens > 10 and result.model == MINILM_ID


def test_float_format_and_one_string(stack: Stack) -> None:
    response = httpx.post(f"{stack.url}/v1/embeddings", timeout=60, json={
        "model": MINILM_ID, "input": "hello", "encoding_format": "float"})
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert isinstance(item["embedding"][0], float) and len(item["embedding"]) == 384


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "text-embedding-3-small", "input": "x"}, 404, None),
    ({"model": MINILM_ID, "input": [[1, 2, 3]]}, 400, "input"),
    ({"model": MINILM_ID, "input": []}, 400, "input"),
    ({"model": MINILM_ID, "input": ["a"] * 257}, 400, "input"),
    ({"model": MINILM_ID, "input": "x", "dimensions": 1536}, 400, "dimensions"),
])
def test_what_is_refused_gets_openais_errors(stack: Stack, body: dict[str, object], status: int,
                                             param: str | None) -> None:
    response = httpx.post(f"{stack.url}/v1/embeddings", json=body, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if param is not None:
        assert error["param"] == param
