"""Folders without Label Studio: ``python -m segmentor segment`` writes predictions.json under the
``model_version`` the backend reports for its label_config.xml and the same settings, with the regions
the backend would make, so importing it leaves the backend nothing to predict."""

from __future__ import annotations

import json
from pathlib import Path

from ml_backend.core.settings import Settings
from ml_backend.model import EmerDiffModel, Runtime
from segmentor import load_model
from segmentor.__main__ import main as segmentor_main

K, SEED, MIN_AREA = 3, 0, 4


def test_segment_cli_writes_the_backends_version_and_regions(
    tiny_model_dir: Path, document_root: Path, tmp_path: Path
) -> None:
    image = sorted((document_root / "scenes").glob("*.png"))[0]
    out = tmp_path / "out"
    assert segmentor_main(["segment", str(image), "--model", str(tiny_model_dir), "--out", str(out),
                           "--k", str(K), "--seed", str(SEED), "--min-area", str(MIN_AREA), "--device", "cpu",
                           "--image-url-prefix", "/data/local-files/?d=", "--document-root",
                           str(document_root)]) == 0
    (task,) = json.loads((out / "predictions.json").read_text())
    (written,) = task["predictions"]

    settings = Settings(model=str(tiny_model_dir), device="cpu", num_segments=K, seed=SEED, min_area=MIN_AREA,
                        cache_dir=None, local_files_document_root=document_root)
    runtime = Runtime.create(settings, load_model(settings.model, device="cpu"))
    backend = EmerDiffModel(runtime, label_config=(out / "label_config.xml").read_text(), project_id=1)
    (predicted,) = backend.predict([{"id": 1, **task}])

    assert written["model_version"] == backend.model_version == predicted["model_version"]

    def without_ids(regions: list[dict]) -> list[dict]:
        return [{key: value for key, value in region.items() if key != "id"} for region in regions]

    assert without_ids(written["result"]) == without_ids(predicted["result"])
    assert written["score"] == predicted["score"]
