import pytest

from anomalycli.deploy import engine_choice
from anomalycli.onnx_runtime import has_int8_dot_products


@pytest.mark.parametrize(
    "features, dot_products",
    [
        ({"avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_int8"}, True),  # Sapphire Rapids
        ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, True),  # Cascade Lake, Zen 4
        ({"avx2", "avx_vnni"}, True),  # Alder Lake and later client CPUs: no AVX-512
        ({"avx2", "avx512f", "avx512bw"}, False),  # Skylake-SP
        ({"avx2", "fma"}, False),  # Haswell, Zen 1-3
        (set(), False),
    ],
)
def test_int8_dot_products_are_the_features_onnx_runtime_picks_its_vnni_and_amx_kernels_by(features, dot_products):
    assert has_int8_dot_products(features) is dot_products


def test_this_cpus_features_as_pytorch_detects_them_give_what_proc_cpuinfo_gives():
    from anomalycli.detection import bank_search

    flags = engine_choice.cpu_flags()
    if not flags:
        pytest.skip("/proc/cpuinfo names no CPU flags here (not Linux, or not x86)")
    assert has_int8_dot_products(bank_search.cpu_features()) == has_int8_dot_products(set(flags))
