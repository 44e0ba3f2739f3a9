"""The engine self-test (assistant/selftest.py, worker/engine_check.py): a crash, an illegal
instruction, a hang or a bad model in the child is reported with its cause and the fix, and
the real engine built here decodes, without ggml's AMX kernels."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from assistant import doctor, selftest
from assistant.settings import Settings

AMX_CPU = ["avx512f", "amx_tile", "amx_int8"]


def child(body: str) -> list[str]:
    """A stand-in engine child: prints what the real one prints, then does ``body``."""
    return [sys.executable, "-c",
            "import os, signal, time\n"
            "print('system_info: CPU : AVX2 = 1 | AMX_INT8 = 1 |', flush=True)\n"
            "print('stage: loaded', flush=True)\n" + body]


def test_a_segfault_names_the_signal_the_stage_the_build_and_the_amx_fix() -> None:
    result = selftest.run(child("os.kill(os.getpid(), signal.SIGSEGV)"),
                          cpu_features=AMX_CPU)
    assert not result.ok
    assert result.returncode == -11
    assert "SIGSEGV" in result.summary and "while reading a prompt" in result.summary
    assert "AMX_INT8 = 1" in result.summary and "amx_tile" in result.summary
    assert "issue 20824" in result.fix and "make install" in result.fix


def test_an_illegal_instruction_says_the_build_is_for_another_cpu() -> None:
    result = selftest.run(child("os.kill(os.getpid(), signal.SIGILL)"), cpu_features=["avx2"])
    assert not result.ok and "SIGILL" in result.summary
    assert "another machine" in result.fix and "LLAMA_PORTABLE=1" in result.fix


def test_a_hung_engine_is_a_failure_within_the_timeout() -> None:
    result = selftest.run(child("time.sleep(30)"), timeout=2, cpu_features=[])
    assert not result.ok and "did not finish within 2 s" in result.summary
    assert result.seconds < 10


def test_a_file_that_is_no_model_is_a_load_failure(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a gguf file")
    result = selftest.run(selftest.engine_check_command(bogus))
    assert not result.ok and result.returncode not in (None, 0) and result.returncode > 0
    assert result.summary.startswith("the model could not be loaded")
    assert "assistant model pull" in result.fix


def test_the_engine_built_here_decodes_and_has_no_amx_kernels(model_path: Path) -> None:
    result = selftest.run(selftest.engine_check_command(model_path, threads=2))
    assert result.ok, result
    assert result.details["tokens"] > 0 and result.details["finite_logits"] is True
    assert result.system_info.startswith("CPU :")
    # AMX stays off in our build even where the CPU has it (llama.cpp issue 20824, Makefile).
    assert "AMX" not in result.system_info


def test_doctor_reports_a_crashing_engine_as_a_failure_with_its_fix(model_path: Path) -> None:
    crashed = selftest.run(child("os.kill(os.getpid(), signal.SIGSEGV)"), cpu_features=AMX_CPU)
    check = doctor.check_engine(Settings(), model_path, run=lambda command: crashed)
    assert check.status == "fail" and "SIGSEGV" in check.detail and "20824" in check.fix


def test_doctor_fails_a_model_file_whose_checksum_differs(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setenv("ASSISTANT_MODELS_DIR", str(models_dir))
    check, path = doctor.check_model(Settings())
    assert check.status == "fail" and path is None
    assert "expected sha256" in check.detail and "assistant model pull" in check.fix


def test_doctor_names_the_models_chat_template_family(model_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_MODEL", str(model_path))
    check, path = doctor.check_model(Settings())
    assert check.status == "ok" and path == model_path
    assert "chat template: chatml" in check.detail  # SmolLM2's template is ChatML
