"""One labelling round in Label Studio, scripted: the pool, the model's guesses, what the annotator does.

Shared by the fixture script (``tests/fixtures/labelstudio/make_fixtures.py``, which
saved what a real server exported) and the slow round-trip test (which does it again
against a live server). The annotator's rectangles are given in Label Studio's
percent coordinates; ``EXPECTED_*`` are the labels they mean, worked out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from src.labelling.labelstudio import BoxGuess, ClassGuess, Proposal, write_import_file

CLASSES = {"classification": ["cat", "dog", "bird"], "detection": ["car", "person"]}
# file name -> size; names with a space and a '+' check the URL quoting both ways
IMAGES = {
    "classification": {"a cat.png": (80, 60), "b+1.png": (80, 60), "c.png": (40, 40), "d.png": (40, 40)},
    "detection": {"street a.png": (80, 60), "street b.png": (64, 48), "street c.png": (100, 50)},
}


def make_pool(document_root: Path, task: str) -> Path:
    """Tiny distinct PNGs under ``<document_root>/pool/<task>/``; returns that folder."""
    folder = Path(document_root) / "pool" / task
    folder.mkdir(parents=True, exist_ok=True)
    for k, (name, (w, h)) in enumerate(IMAGES[task].items()):
        if not (folder / name).exists():
            pixels = np.full((h, w, 3), 40 * k, dtype=np.uint8)
            pixels[h // 4 : h // 2, w // 4 : w // 2] = 255
            Image.fromarray(pixels).save(folder / name)
    return folder


def proposals(folder: Path, task: str) -> list[Proposal]:
    names = list(IMAGES[task])
    if task == "classification":
        guesses = [
            ClassGuess("cat", 0.41),
            ClassGuess("dog", 0.52),
            ClassGuess("bird", 0.63),
            ClassGuess("cat", 0.74),
        ]
    else:
        guesses = [
            BoxGuess(np.array([[10.0, 5.0, 42.0, 33.0]]), ["car"], [0.55], 80, 60),
            BoxGuess(np.array([[1.0, 2.0, 20.0, 30.0]]), ["person"], [0.35], 64, 48),
            # the second box pokes out of the 100 x 50 image: the writer clips it
            BoxGuess(
                np.array([[20.0, 10.0, 60.0, 40.0], [70.0, 5.0, 110.0, 45.0]]),
                ["car", "person"],
                [0.9, 0.7],
                100,
                50,
            ),
        ]
    return [
        Proposal(folder / name, score=round(0.9 - 0.1 * k, 2), rank=k + 1, guess=g)
        for k, (name, g) in enumerate(zip(names, guesses))
    ]


def _choice(name: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [name]}}]


def _rect(x, y, width, height, label, w, h) -> dict:
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {
            "x": x,
            "y": y,
            "width": width,
            "height": height,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }


def annotate(server, project_id: int, task: str, imported: list[dict]) -> None:
    """What the annotator does, through the REST API, task by task in rank order."""
    ids = [
        t["id"]
        for t in sorted(
            server.request("GET", f"/api/tasks/?project={project_id}&page_size=100")["tasks"],
            key=lambda t: t["data"]["al_rank"],
        )
    ]

    def post(task_id, result, **extra):
        return server.request(
            "POST",
            f"/api/tasks/{task_id}/annotations/",
            {"result": result, "was_cancelled": False, "lead_time": 3.0, **extra},
        )

    if task == "classification":
        post(ids[0], _choice("dog"))  # corrects the guess 'cat'
        first = post(ids[1], _choice("dog"))  # two annotations on one task ...
        post(ids[1], _choice("bird"))
        server.request(
            "PATCH", f"/api/annotations/{first['id']}/", {"result": _choice("cat")}
        )  # ... the edited one is latest
        post(ids[2], [], was_cancelled=True)  # skipped
        # ids[3]: never annotated
    else:
        post(
            ids[0],
            [
                _rect(10, 10, 40, 40, "car", 80, 60),
                _rect(75, 20, 20, 70, "person", 80, 60),
                _rect(50, 50, 0, 10, "car", 80, 60),
            ],
        )  # the last one has no width: a slip
        post(ids[1], [])  # no objects in this image
        post(ids[2], imported[2]["predictions"][0]["result"])  # accepts the model's boxes as they are


# The labels the annotation above means (pixel xyxy = percent / 100 x image size):
#   street a, 80 x 60: car x=10 y=10 w=40 h=40 -> (8, 6, 40, 30); person x=75 y=20 w=20 h=70 -> (60, 12, 76, 54)
#   street c, 100 x 50: the model's boxes; the second clipped to the image -> (70, 5, 100, 45)
EXPECTED_CLASSIFICATION = {"a cat.png": "dog", "b+1.png": "cat"}
EXPECTED_DETECTION = {
    "street a.png": ([[8, 6, 40, 30], [60, 12, 76, 54]], ["car", "person"]),
    "street b.png": ([], []),
    "street c.png": ([[20, 10, 60, 40], [70, 5, 100, 45]], ["car", "person"]),
}


def round_trip(server, document_root: Path, task: str, import_file: Path) -> list[dict]:
    """Create the project, import the tasks written by our writer, annotate, export; the export."""
    folder = make_pool(document_root, task)
    write_import_file(
        import_file, proposals(folder, task), task, CLASSES[task], document_root, model_version="round-trip"
    )
    tasks = json.loads(import_file.read_text())
    project = server.request(
        "POST",
        "/api/projects/",
        {"title": f"al-select {task}", "label_config": import_file.with_suffix(".xml").read_text()},
    )
    # a Local Storage on the pool folder is what lets the server hand these files to the annotator
    server.request(
        "POST", "/api/storages/localfiles/", {"project": project["id"], "path": str(folder), "title": "pool"}
    )
    server.request("POST", f"/api/projects/{project['id']}/import", tasks)
    annotate(server, project["id"], task, tasks)
    return server.request(
        "GET", f"/api/projects/{project['id']}/export?exportType=JSON&download_all_tasks=true"
    )
