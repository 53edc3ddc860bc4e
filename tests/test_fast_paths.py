"""Opt-in fast paths: ``fit.channels_last`` keeps the network in NHWC through every round's reset."""

from __future__ import annotations

import pytest
import torch

from src.experiment.build import build_model
from tests.conftest import read_jsonl, run_cli


def test_channels_last_weights_survive_the_reset_to_the_starting_weights(compose_cfg):
    import hydra

    cfg = compose_cfg("debug=fast", "fit.channels_last=true")
    dm = hydra.utils.instantiate(cfg.dataset)
    dm.setup()
    model, snapshot = build_model(cfg, dm)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    start = [w.detach().clone() for w in convs]
    with torch.no_grad():
        for w in convs:
            w.add_(1.0)  # a round's training
    snapshot.restore(model)
    assert all(torch.equal(w, s) for w, s in zip(convs, start))
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


@pytest.mark.slow
def test_a_channels_last_run_selects_and_learns_as_the_plain_one(tmp_path):
    runs = {}
    for flag in ("false", "true"):
        run_cli("debug=fast", "logger=none", f"fit.channels_last={flag}", f"hydra.run.dir={tmp_path / flag}")
        runs[flag] = read_jsonl(tmp_path / flag / "rounds.jsonl")
    plain, nhwc = runs["false"], runs["true"]
    # the same schedule; round 0 (untrained model, same first selection) equal, later losses within 5 %
    assert [r["n_labelled"] for r in plain] == [r["n_labelled"] for r in nhwc]
    assert plain[0]["selected_ids"] == nhwc[0]["selected_ids"]
    assert all(abs(a["test/loss"] - b["test/loss"]) <= 0.05 * a["test/loss"] for a, b in zip(plain, nhwc))
