"""The Label Studio round trip against a real server started here (slow: minutes, mostly its start).

Needs ``label-studio`` in a virtual environment of its own (``make labelstudio-env``,
or ``LABEL_STUDIO_BIN=<path to label-studio>``); skipped with that reason otherwise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from src.data.labelstudio import read_export
from tests.labelstudio_scenario import CLASSES, EXPECTED_CLASSIFICATION, EXPECTED_DETECTION, round_trip
from tests.labelstudio_server import LabelStudioServer, label_studio_bin

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    executable = label_studio_bin()
    if executable is None:
        pytest.skip(
            "Label Studio is not installed: run `make labelstudio-env` (its own venv, .venv-labelstudio/) "
            "or set LABEL_STUDIO_BIN=<path to the label-studio executable>"
        )
    document_root = tmp_path_factory.mktemp("labelstudio_root")
    with LabelStudioServer(executable, tmp_path_factory.mktemp("labelstudio_data"), document_root) as ls:
        yield ls


def test_classification_round_trip(server, tmp_path):
    exported = round_trip(server, server.document_root, "classification", tmp_path / "tasks.json")
    # the annotator's browser gets the pool file itself through the reference the writer chose
    first = next(t for t in exported if t["data"]["al_rank"] == 1)
    assert (
        server.fetch_as_user(first["data"]["image"])
        == (server.document_root / "pool" / "classification" / "a cat.png").read_bytes()
    )
    # the pre-annotation and the acquisition score arrived with the task
    assert first["data"]["al_score"] == 0.9
    export = tmp_path / "export.json"
    export.write_text(json.dumps(exported))
    items, report = read_export(
        export,
        "classification",
        CLASSES["classification"],
        server.document_root,
        server.document_root / "pool",
    )
    assert {i.file.name: CLASSES["classification"][i.label] for i in items} == EXPECTED_CLASSIFICATION
    assert (report.tasks, report.labelled, report.unannotated) == (4, 2, 2)


def test_detection_round_trip(server, tmp_path):
    exported = round_trip(server, server.document_root, "detection", tmp_path / "tasks.json")
    export = tmp_path / "export.json"
    export.write_text(json.dumps(exported))
    items, report = read_export(export, "detection", CLASSES["detection"], server.document_root)
    got = {r.file.name: r for r in items}
    assert set(got) == set(EXPECTED_DETECTION)
    for name, (boxes, labels) in EXPECTED_DETECTION.items():
        np.testing.assert_allclose(got[name].boxes.reshape(-1, 4), np.reshape(boxes, (-1, 4)), atol=1e-4)
        assert [CLASSES["detection"][k] for k in got[name].labels] == labels
    assert report.bad_boxes == {"zero or negative size": 1}
