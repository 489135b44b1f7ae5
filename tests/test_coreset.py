import pytest
import torch

from anomalycli.detection import coreset
from anomalycli.detection.coreset import ApproximateGreedyCoresetSampler, BankIndex, RandomSampler, nearest_distances


def test_greedy_picks_the_farthest_points():
    torch.manual_seed(0)
    cluster = torch.randn(200, 4) * 0.01
    outliers = torch.tensor([[10.0, 0, 0, 0], [0, 10.0, 0, 0], [0, 0, 10.0, 0]])
    features = torch.cat([cluster, outliers])
    chosen = ApproximateGreedyCoresetSampler(ratio=4 / 203, seed=0, projection_dim=4).run(features)
    assert {200, 201, 202} <= set(chosen.tolist())


def test_greedy_is_deterministic_for_a_seed():
    features = torch.randn(2000, 64)
    a = ApproximateGreedyCoresetSampler(0.05, seed=3, projection_dim=16).run(features)
    b = ApproximateGreedyCoresetSampler(0.05, seed=3, projection_dim=16).run(features)
    c = ApproximateGreedyCoresetSampler(0.05, seed=4, projection_dim=16).run(features)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == 100


def test_greedy_chunks_give_the_same_result():
    features = torch.randn(3000, 32)
    whole = ApproximateGreedyCoresetSampler(0.02, seed=0, projection_dim=8).run(features)
    chunked = ApproximateGreedyCoresetSampler(0.02, seed=0, projection_dim=8, chunk=257).run(features)
    assert torch.equal(whole, chunked)


def test_nearest_neighbours_equal_cdist(exact_search):
    torch.manual_seed(1)
    queries, bank = torch.randn(1000, 40), torch.randn(300, 40)
    dist, idx = nearest_distances(queries, bank, k=3, chunk=77)
    reference = torch.cdist(queries, bank).topk(3, dim=1, largest=False)
    torch.testing.assert_close(dist, reference.values, atol=1e-4, rtol=1e-4)
    assert torch.equal(idx[:, 0], reference.indices[:, 0])
    nearest, distances = BankIndex(bank).nearest(queries, chunk=77)  # one part: the whole bank
    assert torch.equal(nearest[:, 0], reference.indices[:, 0])
    torch.testing.assert_close(distances[:, 0], reference.values[:, 0], atol=1e-4, rtol=1e-4)


def test_per_part_minima_equal_cdist_over_each_part_of_unequal_size(exact_search):
    torch.manual_seed(2)
    queries, bank, parts = torch.randn(500, 24), torch.randn(70, 24), [30, 25, 15]
    bounds = [0, 30, 55, 70]
    reference = torch.stack([torch.cdist(queries, bank[a:b]).amin(1) for a, b in zip(bounds[:-1], bounds[1:])], dim=1)
    torch.testing.assert_close(BankIndex(bank, parts).nearest(queries, chunk=64)[1], reference, atol=1e-4, rtol=1e-4)


def _bank_like_queries():
    torch.manual_seed(3)
    # Features like a bank's: a shared offset and correlated dimensions, nearest neighbours close.
    bank = torch.randn(2000, 64) @ torch.randn(64, 152) * 0.3 + 2.0
    queries = bank[torch.randint(0, 2000, (800,))] + 0.3 * torch.randn(800, 152)
    exact = torch.stack([torch.cdist(queries.double(), bank[a : a + 500].double()).amin(1) for a in range(0, 2000, 500)], dim=1).float()
    return bank, queries, exact


@pytest.mark.parametrize("kind", ["bfloat16", "int8"])
def test_rounded_products_stay_within_one_percent_of_the_exact_distances(monkeypatch, kind):
    # Forced on: a CPU without native bfloat16 computes the same values, only slower; int8 on a CPU
    # without VNNI may saturate, which the index's own check catches (next test).
    if kind == "int8" and not coreset.int8_native():
        pytest.skip("no VNNI on this CPU: ONNX Runtime's int8 product may saturate here")
    monkeypatch.setattr(coreset, "search_kind", lambda device: kind)
    bank, queries, exact = _bank_like_queries()
    index = coreset.BankIndex(bank, [500] * 4)
    assert index.kind == kind
    relative = (index.nearest(queries)[1] - exact).abs() / exact
    assert float(relative.max()) < 0.01, float(relative.max())
    assert float(relative.median()) < 0.005


def test_an_int8_index_that_fails_its_check_multiplies_in_bfloat16_or_float32(monkeypatch):
    if not coreset.int8_native():
        pytest.skip("no VNNI on this CPU")
    monkeypatch.setattr(coreset, "search_kind", lambda device: "int8")
    monkeypatch.setattr(coreset, "INT8_SEARCH_RTOL", -1.0)  # no pick can pass
    bank, queries, exact = _bank_like_queries()
    index = coreset.BankIndex(bank, [500] * 4)
    assert index.kind == ("bfloat16" if coreset.bfloat16_native() else "float32")
    assert float(((index.nearest(queries)[1] - exact).abs() / exact).max()) < 0.01


def test_the_int8_search_finds_each_rows_first_copy_in_parts_of_unequal_size(monkeypatch):
    if not coreset.int8_native():
        pytest.skip("no VNNI on this CPU")
    monkeypatch.setattr(coreset, "search_kind", lambda device: "int8")
    torch.manual_seed(5)
    bank, parts = torch.randn(70, 24) * 3, [30, 25, 15]
    bank[31] = bank[30]  # a tie: the first copy is the nearest
    queries = bank + 0.01 * torch.randn(70, 24)
    index = coreset.BankIndex(bank, parts)
    assert index.kind == "int8"
    nearest, distances = index.nearest(queries)
    own_part = torch.tensor([0] * 30 + [1] * 25 + [2] * 15)
    expected = torch.arange(70)
    expected[31] = 30
    assert torch.equal(nearest[torch.arange(70), own_part], expected)
    reference = torch.stack(
        [torch.cdist(queries.double(), bank[a:b].double(), compute_mode="donot_use_mm_for_euclid_dist").amin(1) for a, b in [(0, 30), (30, 55), (55, 70)]],
        dim=1,
    )
    assert float(((distances - reference).abs() / reference).max()) < 1e-3


def test_the_two_pass_minimum_is_the_first_minimum_ties_included():
    torch.manual_seed(4)
    values = torch.randint(0, 50, (300, 3, 4 * coreset.MINIMUM_BLOCK)).float()  # many ties
    assert torch.equal(coreset._first_minimum(values), values.min(-1).indices)
    assert torch.equal(coreset._first_minimum(values), values.argmin(-1))


def test_random_sampler_size():
    assert len(RandomSampler(0.1, seed=0).run(torch.randn(500, 3))) == 50


def test_greedy_on_parts_keeps_each_parts_farthest_points_and_the_ratio():
    torch.manual_seed(0)
    parts = []
    for offset in (0.0, 100.0, 200.0):
        cluster = torch.randn(300, 4) * 0.01 + offset
        outlier = torch.full((1, 4), offset + 10.0)
        parts.append(torch.cat([cluster, outlier]))
    features = torch.cat(parts)  # 903 rows: three parts of 301
    sampler = ApproximateGreedyCoresetSampler(ratio=0.01, seed=0, projection_dim=4, part_size=301)
    chosen = sampler.run(features)
    assert len(chosen) == 9 and len(set(chosen.tolist())) == 9
    assert {300, 601, 902} <= set(chosen.tolist()), "every part's own outlier is kept"
    for start in (0, 301, 602):
        assert sum(start <= i < start + 301 for i in chosen.tolist()) == 3


def test_greedy_on_no_patches_keeps_none():
    assert len(ApproximateGreedyCoresetSampler(0.1).run(torch.zeros(0, 8))) == 0


def test_greedy_with_one_part_is_the_plain_greedy():
    features = torch.randn(3000, 32)
    plain = ApproximateGreedyCoresetSampler(0.02, seed=0, projection_dim=8).run_part(features)
    assert torch.equal(ApproximateGreedyCoresetSampler(0.02, seed=0, projection_dim=8, part_size=3000).run(features), plain)


def test_greedy_reports_every_kept_patch_to_the_progress_bar():
    for n_keep in (1, 256, 257, 512):
        reported = []
        ApproximateGreedyCoresetSampler(n_keep / 2000, projection_dim=8).run(torch.randn(2000, 16), progress=reported.append)
        assert sum(reported) == n_keep
