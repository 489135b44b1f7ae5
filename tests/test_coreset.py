import torch

from anomalycli.detection.coreset import ApproximateGreedyCoresetSampler, RandomSampler


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


def test_every_sampler_reports_every_kept_patch_to_the_progress_bar():
    greedy = [(lambda ratio: ApproximateGreedyCoresetSampler(ratio, projection_dim=8), n) for n in (1, 256, 257, 512, 2000)]
    for sampler, n_keep in [*greedy, (RandomSampler, 300)]:
        reported = []
        sampler(n_keep / 2000).run(torch.randn(2000, 16), progress=reported.append)
        assert sum(reported) == n_keep, (sampler, n_keep)  # all 2,000 kept: the bar still ends full


def test_the_bank_keeps_every_patch_of_a_few_goods_and_a_coreset_of_many():
    from anomalycli.detection.defaults import CORESET_RATIO, MIN_BANK_PATCHES, bank_ratio

    assert bank_ratio(4 * 1600, 4) == 1.0  # 4 goods at 320 px: every patch
    assert bank_ratio(16 * 1600, 16) * 16 * 1600 == MIN_BANK_PATCHES  # 16 goods: the floor
    assert bank_ratio(16 * 24 * 1600, 16) * 16 * 24 * 1600 == MIN_BANK_PATCHES  # the same 16 learnt at 24 turns
    assert round(bank_ratio(64 * 1600, 64) * 64 * 1600) == MIN_BANK_PATCHES // 2  # the floor fades as goods come
    assert bank_ratio(320 * 1600, 320) == CORESET_RATIO  # a full data set: 1 %, 5,120 patches, as it always was
    assert bank_ratio(4 * 1600, 4, 0.1) == 0.1  # the user's --coreset-ratio is kept as given
