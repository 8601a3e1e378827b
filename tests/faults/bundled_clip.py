"""Faults of the bundled small CLIP (its trainer and tokenizer) and of the zero-shot evaluation."""

from tests.faults import fault

FAULTS = [
    fault("the evaluation pools the EmerDiff comparison in the bilinear baseline's segments",
          [("segmentor/evaluation/zero_shot.py", '("emerdiff_segments", image.label_map)',
            '("emerdiff_segments", image.baseline_map)')],
          ["tests/labels/test_zero_shot_evaluation.py::test_bundled_clip_labels_pooled_segments_better_than_one_segment"]),
    fault("the tokenizer's word merges stop after one merge per word (words split into pieces)",
          [("segmentor/toy/clip_architecture.py", "        while len(pieces := _bpe(word, ranks)) > 1:",
            "        if len(pieces := _bpe(word, ranks)) > 1:")],
          ["tests/toy/test_clip_train.py::test_word_merges_make_words_whole_in_any_order",
           "tests/toy/test_clip_train.py::test_every_caption_word_is_one_token"]),
    fault("saved segmentations drop the baseline's segments (a re-read evaluation cannot compare)",
          [("segmentor/evaluation/labels.py", 'for field in ("image", "gt", "label_map", "features", "baseline_map")',
            'for field in ("image", "gt", "label_map", "features")')],
          ["tests/labels/test_zero_shot_evaluation.py::test_saved_segmentations_keep_the_baseline_segments"]),
    fault("the per-pixel baseline reads the grid without upsampling it to the image",
          [("segmentor/evaluation/zero_shot.py", 'upsampled = F.interpolate(cells, size=shape, mode="bilinear", '
            'align_corners=False)[0].permute(1, 2, 0)',
            'upsampled = cells[0].permute(1, 2, 0)')],
          ["tests/labels/test_zero_shot_evaluation.py::test_every_mode_scores_three_labellings"]),
]
