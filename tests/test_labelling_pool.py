"""The unlabelled pool and the model's guesses in file pixels: values by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from src.errors import UserError
from src.labelling.pool import UnlabelledImages, box_guesses, class_guesses, pool_files


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "b.png")
    Image.new("RGB", (30, 30), (0, 0, 255)).save(tmp_path / "sub" / "a.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / ".hidden" / "c.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_pool_files_are_the_visible_images_sorted(folder):
    assert [p.relative_to(folder).as_posix() for p in pool_files(folder)] == ["b.png", "sub/a.jpg"]
    with pytest.raises(UserError, match="images=.*: not a folder"):
        pool_files(folder / "missing")
    with pytest.raises(UserError, match="no image files"):
        pool_files(_empty(folder))


def _empty(folder):
    (folder / "empty").mkdir()
    return folder / "empty"


def test_unlabelled_items_for_both_tasks(folder):
    files = pool_files(folder)
    image, label, i = UnlabelledImages(files, "classification", 16)[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16) and label.item() == -1 and i == 0
    assert image[:, 8, 8].tolist() == [255, 0, 0]
    items = UnlabelledImages(files, "detection", (64, 32))
    image, target, i = items[1]
    assert image.shape == (3, 32, 64) and np.abs(image[:, 0, 0].numpy() - [0, 0, 255]).max() <= 2  # JPEG
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert items.original_size(1) == (30, 30) and items.original_size(0) == (40, 20)


def test_class_guess_is_the_softmax_maximum():
    guesses = class_guesses(torch.tensor([[0.0, math.log(3.0)], [2.0, 0.0]]), ["cat", "dog"])
    # softmax([0, ln 3]) = [1/4, 3/4]; softmax([2, 0]) = [e^2 / (e^2 + 1), ...]
    assert [g.label for g in guesses] == ["dog", "cat"]
    assert guesses[0].confidence == pytest.approx(0.75)
    assert guesses[1].confidence == pytest.approx(math.e**2 / (math.e**2 + 1))


def test_box_guesses_scale_back_to_the_file_and_drop_weak_detections():
    det = {
        "boxes": torch.tensor([[10.0, 5.0, 20.0, 25.0], [0.0, 0.0, 5.0, 5.0]]),
        "labels": torch.tensor([1, 0]),
        "scores": torch.tensor([0.8, 0.1]),
    }
    (guess,) = box_guesses(
        [det], input_size=(100, 50), original_sizes=[(200, 200)], classes=["car", "person"]
    )
    # x scaled by 200 / 100 = 2, y by 200 / 50 = 4
    np.testing.assert_allclose(guess.boxes, [[20, 20, 40, 100]])
    assert list(guess.labels) == ["person"] and guess.scores == pytest.approx([0.8])
    assert (guess.width, guess.height) == (200, 200)
