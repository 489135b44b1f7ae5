import numpy as np
import pytest
import torch

from anomalycli.detection import bank_search
from anomalycli.detection.bank_search import BankIndex, nearest_distances


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
    if kind == "int8" and not bank_search.int8_native():
        pytest.skip("no VNNI on this CPU: ONNX Runtime's int8 product may saturate here")
    monkeypatch.setattr(bank_search, "search_kind", lambda device: kind)
    bank, queries, exact = _bank_like_queries()
    index = bank_search.BankIndex(bank, [500] * 4)
    assert index.kind == kind
    relative = (index.nearest(queries)[1] - exact).abs() / exact
    assert float(relative.max()) < 0.01, float(relative.max())
    assert float(relative.median()) < 0.005


def test_an_int8_index_that_fails_its_check_multiplies_in_bfloat16_or_float32(monkeypatch):
    if not bank_search.int8_native():
        pytest.skip("no VNNI on this CPU")
    monkeypatch.setattr(bank_search, "search_kind", lambda device: "int8")
    monkeypatch.setattr(bank_search, "INT8_SEARCH_RTOL", -1.0)  # no pick can pass
    bank, queries, exact = _bank_like_queries()
    index = bank_search.BankIndex(bank, [500] * 4)
    assert index.kind == ("bfloat16" if bank_search.bfloat16_native() else "float32")
    assert float(((index.nearest(queries)[1] - exact).abs() / exact).max()) < 0.01


def test_the_int8_search_finds_each_rows_first_copy_in_parts_of_unequal_size(monkeypatch):
    if not bank_search.int8_native():
        pytest.skip("no VNNI on this CPU")
    monkeypatch.setattr(bank_search, "search_kind", lambda device: "int8")
    torch.manual_seed(5)
    bank, parts = torch.randn(70, 24) * 3, [30, 25, 15]
    bank[31] = bank[30]  # a tie: the first copy is the nearest
    queries = bank + 0.01 * torch.randn(70, 24)
    index = bank_search.BankIndex(bank, parts)
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
    values = torch.randint(0, 50, (300, 3, 4 * bank_search.MINIMUM_BLOCK)).float()  # many ties
    assert torch.equal(bank_search._first_minimum(values), values.min(-1).indices)
    assert torch.equal(bank_search._first_minimum(values), values.argmin(-1))


def test_the_exported_two_pass_minimum_copies_whole_blocks_and_keeps_the_first_minimum():
    # In an exported graph the best block is a Gather of whole rows (GatherElements with an expanded
    # index was 3.5 ms of a screws image's 42 on ONNX Runtime), and ties still go to the first.
    import io

    import onnx
    import onnxruntime

    class FirstMinimum(torch.nn.Module):
        def forward(self, values):
            return bank_search._first_minimum(values)

    torch.manual_seed(5)
    values = torch.randint(0, 50, (200, 2, 3 * bank_search.MINIMUM_BLOCK)).float()
    graph = io.BytesIO()
    torch.onnx.export(FirstMinimum(), (values,), graph, input_names=["values"], dynamic_axes={"values": {0: "n"}}, dynamo=False)
    assert "GatherElements" not in {node.op_type for node in onnx.load_from_string(graph.getvalue()).graph.node}
    session = onnxruntime.InferenceSession(graph.getvalue(), providers=["CPUExecutionProvider"])
    for rows in (values, values[:7]):
        assert np.array_equal(session.run(None, {"values": rows.numpy()})[0], rows.min(-1).indices.numpy())


def test_an_exported_search_over_its_budget_searches_each_images_positions_in_blocks(monkeypatch):
    # Blocks of patch positions, not of queries: the graph takes any number of images, and each
    # image's nearest rows in each part come out in its own order, however many images a call holds.
    import io

    import onnx
    import onnxruntime

    torch.manual_seed(6)
    bank, parts, per_image = torch.randn(70, 24), [30, 25, 15], 50
    index = BankIndex(bank, parts, kind="float32")

    class Search(torch.nn.Module):
        def forward(self, queries):
            return index.nearest(queries, per_image=per_image)

    monkeypatch.setattr(bank_search, "EXPORT_PRODUCTS_BYTES", per_image * index.padded.numel() * 4 // 4)  # 4 blocks: 13, 13, 13, 11 positions
    graph = io.BytesIO()
    queries = torch.randn(3 * per_image, 24)
    torch.onnx.export(Search(), (queries,), graph, input_names=["q"], dynamic_axes={"q": {0: "n"}}, dynamo=False)
    assert sum(node.op_type == "MatMul" for node in onnx.load_from_string(graph.getvalue()).graph.node) == 4
    session = onnxruntime.InferenceSession(graph.getvalue(), providers=["CPUExecutionProvider"])
    bounds = [0, 30, 55, 70]
    for q in (queries, queries[: 2 * per_image]):
        nearest, distances = session.run(None, {"q": q.numpy()})
        reference = torch.stack([torch.cdist(q, bank[a:b]).min(1).indices + a for a, b in zip(bounds[:-1], bounds[1:])], dim=1)
        assert np.array_equal(nearest, reference.numpy())
        np.testing.assert_allclose(distances, torch.cdist(q, bank).gather(1, reference).numpy(), rtol=1e-4, atol=1e-4)
