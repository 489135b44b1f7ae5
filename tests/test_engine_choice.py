import pytest

from anomalycli.deploy import engine_choice
from anomalycli.errors import UsageError


@pytest.mark.parametrize(
    "flags, named",
    [
        (["sse2", "avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_int8"], "x86_64, AMX"),
        (["avx2", "avx512bw", "avx512_vnni"], "x86_64, AVX-512 VNNI"),
        (["avx2", "avx_vnni"], "x86_64, AVX-VNNI"),
        (["avx2", "avx512f", "avx512bw"], "x86_64, AVX-512, no VNNI"),
        (["sse4_2", "avx2", "fma"], "x86_64, AVX2, no VNNI"),
        (["sse4_2"], "x86_64, no AVX2"),
    ],
)
def test_the_cpu_class_names_the_int8_kernels_it_gets(flags, named):
    assert engine_choice.int8_class("x86_64", flags) == named


def test_a_machine_without_cpu_flags_is_named_by_its_architecture():
    assert engine_choice.int8_class("aarch64", []) == "aarch64"
    assert engine_choice.cpu_class().split(",")[0]  # this machine's, whatever it is


def test_an_unknown_engine_is_one_usage_error():
    with pytest.raises(UsageError, match="--engine must be one of auto, torch, onnx, onnx-fp32"):
        engine_choice.resolve_engine("gpu")
