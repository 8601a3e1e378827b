"""The backend's answer with zero-shot off, as saved from the code before zero-shot existed.

``python -m tests.zeroshot.answers`` rewrites ``data/zero_shot_off.json``; do it only for an intended change
of the output (one that bumps converters.model_version.OUTPUT_REVISION or changes a default), never to make
the byte-identity test pass.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from ml_backend.core.settings import Settings
from ml_backend.service.app import create_app
from segmentor import load_model
from segmentor.toy.architecture import TINY_TEST_SPEC, build_model_folder
from tests.backend.support import BOTH_CONFIG, NUM_SEGMENTS, png_bytes

SAVED = Path(__file__).parent / "data" / "zero_shot_off.json"
# Label attributes zero-shot reads (synonyms, a background flag): with zero-shot off they change nothing.
WORDS_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="poly" toName="image">
    <Label value="Car" predicted_values="car,automobile"/><Label value="TrafficLight"/>
    <Label value="Sky" emerdiff-prompt="sky, clouds"/><Label value="Background"/>
  </PolygonLabels>
</View>"""
CONFIGS = {"both": BOTH_CONFIG, "words": WORDS_CONFIG}


def answers(root: Path, model_dir: Path | None = None, configs: dict[str, str] = CONFIGS,
            **settings: object) -> dict:
    """/setup's and /predict's JSON for two scenes under each config (a fresh cache and memory in ``root``)."""
    images = root / "documents" / "images"
    images.mkdir(parents=True, exist_ok=True)
    for seed in range(2):
        (images / f"scene{seed}.png").write_bytes(png_bytes(seed))
    if model_dir is None:
        model_dir = build_model_folder(TINY_TEST_SPEC, root / "model", seed=0)
    base = Settings(model=str(model_dir), num_segments=NUM_SEGMENTS, cache_dir=root / "cache", data_dir=root / "data",
                    local_files_document_root=(root / "documents").resolve(), fetch_timeout=5.0)
    app = create_app(dataclasses.replace(base, **settings), model=load_model(str(model_dir)))
    client = app.test_client()
    saved = {}
    tasks = [{"id": seed + 1, "data": {"image": f"/data/local-files/?d=images/scene{seed}.png"}} for seed in range(2)]
    for name, config in configs.items():
        setup = client.post("/setup", json={"project": "1.1", "schema": config})
        predicted = client.post("/predict", json={"tasks": tasks, "label_config": config, "project": "1.1"})
        saved[name] = {"setup": setup.get_data(as_text=True), "predict": predicted.get_data(as_text=True)}
    return saved


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        SAVED.write_text(json.dumps(answers(Path(folder)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SAVED}")
