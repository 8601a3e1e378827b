"""Smart tools off the square (issue 18): click -> pixel mapping, rotated boxes, "mostly inside", scores."""

from tests.faults import fault

P = "ml_backend/smart_tools/prompts.py"
E = "tests/interactive/test_edges.py"
WIDE = f"{E}::test_a_click_on_a_wide_image_selects_the_segment_under_it"
TALL = f"{E}::test_a_click_on_a_tall_image_selects_the_segment_under_it"
OUTSIDE = f"{E}::test_a_click_outside_the_image_selects_nothing"
R90 = f"{E}::test_a_box_rotated_90_degrees_turns_clockwise_about_its_top_left_corner"
R270 = f"{E}::test_a_box_rotated_270_degrees_turns_the_other_way"
HALF = f"{E}::test_a_segment_exactly_half_inside_a_box_is_not_taken_and_one_pixel_more_is"
LEVEL = f"{E}::test_a_box_measures_the_controls_level_segment_not_its_leaves"
SCORE = f"{E}::test_a_smart_regions_score_is_its_segments_scores_weighted_by_their_areas"

FAULTS = [
    fault("click mapped with width and height swapped",
          [(P, "pixel = _pixel(prompt, width, height)", "pixel = _pixel(prompt, height, width)")], [WIDE, TALL]),
    fault("label map indexed [column, row]",
          [(P, "leaf = int(label_map[pixel[1], pixel[0]])", "leaf = int(label_map[pixel[0], pixel[1]])")], [WIDE]),
    fault("row scaled by the width",
          [(P, "row = min(int(prompt.y * height / 100.0), height - 1)",
            "row = min(int(prompt.y * width / 100.0), height - 1)")], [WIDE, TALL]),
    fault("100 % clamped one past the last column",
          [(P, "column = min(int(prompt.x * width / 100.0), width - 1)",
            "column = min(int(prompt.x * width / 100.0), width)")], [WIDE]),
    fault("a point at 100 % counted outside the image",
          [(P, "0.0 <= prompt.x <= 100.0 and", "0.0 <= prompt.x < 100.0 and")], [WIDE]),
    fault("a point past 100 % clamped onto the image",
          [(P, "if not (0.0 <= prompt.x <= 100.0 and 0.0 <= prompt.y <= 100.0):", "if False:")], [OUTSIDE]),
    fault("smart rectangle's rotation dropped",
          [(P, '"rotation": prompt.rotation,', '"rotation": 0.0,')], [R90, R270]),
    fault("smart rectangle rotated the other way",
          [(P, '"rotation": prompt.rotation,', '"rotation": -prompt.rotation,')], [R90, R270]),
    fault("rotation not read from the context",
          [(P, 'for key in (*numbers_needed, "rotation"):', "for key in numbers_needed:")], [R90]),
    fault("exactly half inside counts as mostly inside",
          [(P, "taken = np.flatnonzero(area_inside > MOSTLY_INSIDE", "taken = np.flatnonzero(area_inside >= MOSTLY_INSIDE")],  # noqa: E501
          [HALF]),
    fault("box measured against leaves, not the control's level segments",
          [(P, "per_pixel = unit_index[label_map[owned]]", "per_pixel = label_map[owned]")], [LEVEL]),
    fault("smart region's score is the plain mean of its segments",
          [(P, "score = float(np.average(scores, weights=areas)) if areas.sum() else 0.0",
            "score = float(np.mean([scores[leaf] for leaf in sorted(chosen)]))")], [SCORE]),
]
