"""Label pooling off the square and the label threshold (issue 18).

Not listed: faults in ``pool_features``' speck branch (``total <= 0``). INTER_AREA gives every covered pixel a
positive weight (a one-pixel mask on a 3000 x 7000 image still weighs 1e-6), so that branch is not reached
by any mask of a real image and a fault there is equivalent. Nor "pooled over the transposed grid" (both
the weights and the grid transposed): a sum over every cell is the same either way, also an equivalent fault.
"""

from tests.faults import fault

L = "segmentor/labelling.py"
E = "tests/labels/test_pooling_edges.py"

FAULTS = [
    fault("grid resized to (height, width): cv2 takes (width, height)",
          [(L, "(width, height), interpolation=cv2.INTER_AREA)", "(height, width), interpolation=cv2.INTER_AREA)")],
          [f"{E}::test_pooling_on_a_wide_image_averages_the_cells_under_the_mask",
           f"{E}::test_pooling_on_a_tall_image_averages_the_cells_under_the_mask"]),
    fault("every covered cell weighs fully, however little of it the mask covers",
          [(L, "weights = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)",
            "weights = (cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0)"
            ".astype(np.float32)")],
          ["tests/labels/test_labelling.py::test_pooling_weights_cells_by_the_area_the_mask_covers"]),
    fault("a region's size read as (width, height)",
          [(L, 'size = (region.get("original_height"), region.get("original_width"))',
            'size = (region.get("original_width"), region.get("original_height"))')],
          [f"{E}::test_an_example_from_a_wide_image_pools_the_cells_its_region_covers",
           f"{E}::test_a_region_drawn_on_the_transposed_size_is_refused"]),
    fault("segment embeddings skip segment 0",
          [(L, "for segment_id in np.unique(label_map):", "for segment_id in np.unique(label_map)[1:]:")],
          [f"{E}::test_segment_embeddings_of_a_wide_label_map"]),
    fault("a confidence equal to the threshold keeps the default",
          [(L, "label = guess.label if guess.confidence >= threshold else default",
            "label = guess.label if guess.confidence > threshold else default")],
          [f"{E}::test_a_confidence_exactly_at_the_threshold_takes_the_label",
           f"{E}::test_a_confidence_just_under_the_threshold_keeps_the_default"]),
    fault("emerdiff-threshold of exactly 1 refused",
          [("ml_backend/core/label_config.py", "            if value > high:", "            if value >= high:")],
          [f"{E}::test_emerdiff_threshold_accepts_both_ends_of_its_range"]),
    fault("emerdiff-threshold of exactly 0 refused",
          [("ml_backend/core/settings.py", "math.isfinite(value) and value >= low and", "math.isfinite(value) and value > low and")],  # noqa: E501
          [f"{E}::test_emerdiff_threshold_accepts_both_ends_of_its_range"]),
]
