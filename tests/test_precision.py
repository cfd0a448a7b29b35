"""bf16 only where the hardware computes it (clipcap.precision): the CPU's capability faked both ways."""

import logging

import pytest
import torch

from clipcap import precision
from clipcap.precision import FORCE_BF16_ENV, describe_cpu, native_bf16, resolve_bf16
from clipcap.teacher import CLIPTeacher
from clipcap.training_args import ClipCapTrainingArguments


@pytest.fixture
def emulating_cpu(monkeypatch):
    """A CPU like the AVX2 EPYC: no AMX, no AVX-512 BF16."""
    monkeypatch.setattr(precision, "cpu_bf16_features", list)
    monkeypatch.delenv(FORCE_BF16_ENV, raising=False)


@pytest.fixture
def amx_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ["AMX", "AVX-512 BF16"])
    monkeypatch.delenv(FORCE_BF16_ENV, raising=False)


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "clipcap.precision" and r.levelno >= logging.WARNING]


def test_auto_takes_bf16_only_where_it_is_native(emulating_cpu, caplog):
    caplog.set_level(logging.INFO, logger="clipcap.precision")
    assert resolve_bf16("auto", "cpu", "part A") is False
    assert not warnings(caplog)  # auto asked for nothing it did not get
    assert "part A in fp32 (auto: the CPU" in caplog.text and "neither AMX nor AVX-512 BF16" in caplog.text
    assert resolve_bf16("fp32", "cpu", "part A") is False


def test_bf16_asked_for_on_an_emulating_cpu_falls_back_with_one_warning(emulating_cpu, caplog):
    assert [resolve_bf16("bf16", "cpu", "part B") for _ in range(3)] == [False, False, False]
    assert resolve_bf16(True, "cpu", "part B") is False
    (message,) = warnings(caplog)  # said once, whatever asks again
    assert "part B in fp32, not the bf16 asked for" in message and f"{FORCE_BF16_ENV}=1" in message


def test_forcing_emulated_bf16(emulating_cpu, monkeypatch, caplog):
    monkeypatch.setenv(FORCE_BF16_ENV, "1")
    assert resolve_bf16("bf16", "cpu", "part C") is True
    assert resolve_bf16("auto", "cpu", "part C") is False  # forcing overrides a request, not the automatic choice
    (message,) = warnings(caplog)
    assert "emulated bf16" in message


def test_native_cpu_takes_bf16(amx_cpu, caplog):
    caplog.set_level(logging.INFO, logger="clipcap.precision")
    assert resolve_bf16("auto", "cpu", "part D") is True and resolve_bf16("bf16", "cpu", "part D") is True
    assert not warnings(caplog) and "has AMX and AVX-512 BF16" in caplog.text
    assert native_bf16("cpu")[0] is True


def test_gpu_without_bf16(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_bf16("auto", "cuda", "part E") is False
    assert resolve_bf16("bf16", "cuda", "part E") is False
    (message,) = warnings(caplog)
    assert "Tesla T4" in message and "Ampere" in message
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_bf16("auto", "cuda", "part F") is True


def test_bad_request():
    with pytest.raises(ValueError, match="choose one of auto, fp32, bf16"):
        resolve_bf16("fp16", "cpu", "part G")


def test_describe_cpu_names_model_capability_and_bf16(emulating_cpu):
    text = describe_cpu()
    assert precision.cpu_model() in text and f"torch {torch.backends.cpu.get_cpu_capability()}" in text
    assert text.endswith("native bf16: none (emulated)")


@pytest.mark.parametrize("cpu, expected", [("emulating_cpu", "fp32"), ("amx_cpu", "bf16")])
def test_the_teacher_follows_the_cpu(cpu, expected, request, teacher_checkpoint):
    request.getfixturevalue(cpu)
    for asked in ("auto", "bf16"):
        teacher = CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint), precision=asked)
        assert teacher.precision == expected
        with teacher._autocast():
            assert torch.is_autocast_enabled("cpu") == (expected == "bf16")
    assert CLIPTeacher.from_pretrained("ClipCap-Test-Teacher", str(teacher_checkpoint)).precision == "fp32"


@pytest.mark.parametrize("cpu, expected", [("emulating_cpu", False), ("amx_cpu", True)])
def test_training_bf16_follows_the_cpu(cpu, expected, request, tmp_path, caplog):
    request.getfixturevalue(cpu)
    args = ClipCapTrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to="none")
    assert args.bf16 is expected
    assert bool(warnings(caplog)) is not expected
    assert ClipCapTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none").bf16 is False
    if not torch.cuda.is_available():  # bf16 on a CPU that has it, from a config written for a GPU (use_cpu false)
        args = ClipCapTrainingArguments(output_dir=str(tmp_path), bf16=True, report_to="none")
        assert (args.bf16, args.use_cpu, args.device.type) == (expected, expected, "cpu")


def test_the_avx2_code_path_on_a_bf16_cpu_counts_as_emulated(monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2 make PyTorch run the AVX2 code path on a newer CPU, where
    bf16 is then emulated: the hardware's AMX / AVX-512 BF16 no longer count."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert precision.cpu_bf16_features() == ["AVX-512 BF16"] and precision.bf16_code_path_limits() == []
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert native_bf16("cpu")[0] is True
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert precision.cpu_bf16_features() == []
    assert native_bf16("cpu") == (
        False,
        "bf16 is emulated on this code path (ONEDNN_MAX_CPU_ISA=AVX2) and slower than fp32",
    )
    assert describe_cpu().endswith(
        ", torch AVX512, oneDNN up to AVX2, native bf16: none (emulated: ONEDNN_MAX_CPU_ISA=AVX2)"
    )
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert precision.bf16_code_path_limits() == ["torch runs its AVX2 kernels"] and not native_bf16("cpu")[0]
