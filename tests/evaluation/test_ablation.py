"""The ablation runner: which configurations it evaluates, and one tiny run end to end."""

from __future__ import annotations

import json

import pytest

from segmentor.config import EmerDiffConfig
from segmentor.evaluation.ablation import main, variants


def test_variants_change_one_setting_at_a_time_and_skip_the_default_value():
    base = EmerDiffConfig(num_segments=6)
    rows = variants(base, {"modulation_strength": (5.0, 10.0), "attention_injection": (True, False)})
    assert [label for label, _ in rows] == ["default", "modulation_strength=5.0", "attention_injection=False"]
    assert rows[1][1].modulation_strength == 5.0
    assert rows[1][1].num_segments == rows[2][1].num_segments == 6
    assert rows[2][1].attention_injection is False and rows[2][1].modulation_strength == 10.0


def test_unknown_setting_to_vary_is_reported(capsys):
    assert main(["--vary", "lambda=1,2", "--model", "no-such-model-folder"]) == 2
    assert "expected FIELD=VALUE" in capsys.readouterr().err


@pytest.mark.slow
def test_ablation_prints_a_markdown_row_per_variant(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "ablation.json"
    assert main(["--model", str(tiny_model_dir), "--scenes", "1", "--k", "2", "--set", "step_stride=5",
                 "--vary", "modulation_strength=5", "--out", str(out)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 2 + 2  # header, rule, default, lambda = 5
    assert table[2].startswith("| default |") and table[3].startswith("| modulation_strength=5.0 |")
    results = json.loads(out.read_text())["results"]
    assert [r["config"]["modulation_strength"] for r in results] == [10.0, 5.0]
    assert all(r["steps_after_t_m"] == 3 for r in results)  # 281, 181, 81 at stride 5
