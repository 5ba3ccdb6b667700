"""WiSE-FT weight-space ensemble (issue 12): mixing, the grid and the adoption rule fixed before measurement."""

import numpy as np
import pytest
import torch

from training import wise_ft


def _rows(accs: dict[float, float]) -> list[dict]:
    return [{"alpha": a, "heldout": {"accuracy": v, "top3_accuracy": v, "n": 100}} for a, v in sorted(accs.items())]


def test_mix_interpolates_floating_weights_and_keeps_integer_buffers():
    start = {"w": torch.zeros(2, 2), "ids": torch.arange(3)}
    tuned = {"w": torch.ones(2, 2), "ids": torch.arange(3) + 5}
    out = wise_ft.mix(start, tuned, 0.3)
    assert torch.allclose(out["w"], torch.full((2, 2), 0.3))
    assert torch.equal(out["ids"], tuned["ids"])
    assert torch.equal(wise_ft.mix(start, tuned, 1.0)["w"], tuned["w"])


def test_grid_scores_every_alpha_and_leaves_the_fine_tuned_weights():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    start = wise_ft.snapshot(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    tuned = wise_ft.snapshot(model)
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = np.zeros(20, dtype=np.int64)

    def logits(m, texts):
        with torch.no_grad():
            return m(torch.from_numpy(x[: len(texts)])).numpy()

    rows = wise_ft.grid(model, start, logits, {"s": (["t"] * 20, y)}, alphas=(0.0, 0.5, 1.0))
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert all(0.0 <= r["s"]["accuracy"] <= 1.0 and r["s"]["n"] == 20 for r in rows)
    for key, value in model.state_dict().items():
        assert torch.equal(value, tuned[key])


def test_decide_adopts_alpha_only_when_it_wins_on_the_held_out_direction():
    grids = {"a->b": _rows({0.0: 0.50, 0.5: 0.80, 1.0: 0.76}), "b->a": _rows({0.0: 0.40, 0.5: 0.60, 1.0: 0.56})}
    d = wise_ft.decide(grids)
    assert d["enabled"] and d["alpha"] == 0.5
    assert d["leave_one_direction_out"]["a->b"]["gain"] == pytest.approx(0.04)


def test_decide_keeps_the_fine_tune_when_a_direction_loses_or_the_gain_is_small():
    loses = {"a->b": _rows({0.5: 0.80, 1.0: 0.76}), "b->a": _rows({0.5: 0.55, 1.0: 0.56})}
    assert wise_ft.decide(loses)["alpha"] == 1.0 and not wise_ft.decide(loses)["enabled"]
    small = {"a->b": _rows({0.5: 0.765, 1.0: 0.76}), "b->a": _rows({0.5: 0.565, 1.0: 0.56})}
    assert wise_ft.decide(small)["alpha"] == 1.0
    one = {"a->b": _rows({0.5: 0.9, 1.0: 0.5})}
    assert wise_ft.decide(one)["alpha"] == 1.0 and "fewer than two" in wise_ft.decide(one)["reason"]


def test_decide_breaks_ties_towards_the_fine_tuned_model():
    tie = {"a->b": _rows({0.6: 0.80, 0.8: 0.80, 1.0: 0.70}), "b->a": _rows({0.6: 0.60, 0.8: 0.60, 1.0: 0.50})}
    assert wise_ft.decide(tie)["alpha"] == 0.8


def test_validation_limits_the_candidates_to_alphas_that_keep_in_source_accuracy():
    # the first full run's shape: the zero-shot start wins one cross-source direction, loses 10 points in-source
    grids = {"a->b": _rows({0.0: 0.762, 0.9: 0.758, 1.0: 0.760}), "b->a": _rows({0.0: 0.642, 0.9: 0.568, 1.0: 0.563})}
    assert wise_ft.decide(grids)["alpha"] == 0.0  # the rule before the revision
    validation = [{"alpha": a, "validation": {"accuracy": v}} for a, v in ((0.0, 0.737), (0.9, 0.848), (1.0, 0.853))]
    assert wise_ft.allowed_alphas(validation) == {0.9, 1.0}
    d = wise_ft.decide(grids, validation=validation)
    assert d["candidates"] == [0.9, 1.0] and d["alpha"] == 1.0 and not d["enabled"]
    assert d["leave_one_direction_out"]["a->b"]["alpha_from_other"] == 0.9  # 0.568 > 0.563 on b->a
    with pytest.raises(ValueError, match="alpha = 1"):
        wise_ft.allowed_alphas([{"alpha": 0.5, "validation": {"accuracy": 0.9}}])
