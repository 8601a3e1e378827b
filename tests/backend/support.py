"""Label configs, images and request helpers shared by the backend tests."""

from __future__ import annotations

import io

import numpy as np
from flask.testing import FlaskClient
from PIL import Image

# Small k keeps one segmentation of the tiny model around a second on a CPU.
NUM_SEGMENTS = 4

POLYGON_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="poly" toName="image">
    <Label value="Object"/><Label value="Background"/>
  </PolygonLabels>
</View>"""

BRUSH_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="brush" toName="image">
    <Label value="Thing"/><Label value="Stuff"/>
  </BrushLabels>
</View>"""

BOTH_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="poly" toName="image" emerdiff-label="Background">
    <Label value="Object"/><Label value="Background"/>
  </PolygonLabels>
  <BrushLabels name="brush" toName="image">
    <Label value="Thing"/><Label value="Stuff"/>
  </BrushLabels>
</View>"""


def png_bytes(seed: int, height: int = 48, width: int = 64) -> bytes:
    """A PNG of a gradient with two flat shapes (different for every seed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 / width, yy * 255 / height, np.full_like(xx, 90.0)], axis=-1)
    image += rng.normal(0, 6, image.shape)
    image[height // 5 : height // 2, width // 4 : width * 3 // 4] = rng.integers(0, 255, 3)
    image[(yy - height * 0.7) ** 2 + (xx - width * 0.4) ** 2 < (height / 6) ** 2] = rng.integers(0, 255, 3)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def task(task_id: int, image: str) -> dict:
    return {"id": task_id, "data": {"image": image}, "project": 1}


def predict(
    client: FlaskClient, tasks: list[dict], label_config: str = POLYGON_CONFIG, **headers: str
) -> list[dict]:
    response = client.post(
        "/predict",
        json={"tasks": tasks, "label_config": label_config, "project": "1.1", "params": {"context": None}},
        headers=headers,
    )
    assert response.status_code == 200, response.json
    results = response.json["results"]
    assert len(results) == len(tasks)
    return results


def metrics_of(client: FlaskClient) -> dict[str, dict[str, float]]:
    """The app's counters by group (what GET /metrics exposes in Prometheus' format)."""
    return client.application.extensions["emerdiff"].metrics.snapshot()
