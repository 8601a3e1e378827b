"""Merge-tree adjacency and scores (issue 18): straight borders, one-pixel lines, corners, area weights."""

from tests.faults import fault

M = "segmentor/merge_tree.py"
L = "segmentor/labelling.py"
E = "tests/interactive/test_edges.py"
HORIZONTAL = f"{E}::test_segments_that_touch_only_along_a_horizontal_border_are_adjacent"
VERTICAL = f"{E}::test_segments_that_touch_only_along_a_vertical_border_are_adjacent"
LINE = f"{E}::test_a_one_pixel_line_between_two_segments_keeps_them_apart"
CORNER = f"{E}::test_segments_meeting_only_at_a_corner_are_not_adjacent"
STRIPES = f"{E}::test_the_merge_tree_of_stripes_joins_only_neighbouring_stripes"
MERGED = f"{E}::test_merged_scores_weigh_each_part_by_its_area"
SAME = "tests/labels/test_pooling_edges.py::test_same_label_segments_touching_along_a_straight_border_merge_and_corners_do_not"  # noqa: E501

ROW_PAIRS = "        np.stack([label_map[:-1, :].ravel(), label_map[1:, :].ravel()]),\n"
COLUMN_PAIRS = "        np.stack([label_map[:, :-1].ravel(), label_map[:, 1:].ravel()]),\n"

FAULTS = [
    fault("adjacency misses horizontal borders (row neighbours)", [(M, ROW_PAIRS, "")],
          [HORIZONTAL, STRIPES, f"{E}::test_the_wide_maps_segments_touch_their_row_and_column_neighbours_only"]),
    fault("adjacency misses vertical borders (column neighbours)", [(M, COLUMN_PAIRS, "")], [VERTICAL]),
    fault("row neighbours compared two rows apart",
          [(M, "label_map[:-1, :].ravel(), label_map[1:, :].ravel()]),\n    ]",
            "label_map[:-2, :].ravel(), label_map[2:, :].ravel()]),\n    ]")], [LINE]),
    fault("column neighbours compared two columns apart",
          [(M, "label_map[:, :-1].ravel(), label_map[:, 1:].ravel()]),\n        np.stack([label_map[:-1, :].ravel(), label_map[1:, :].ravel()]),\n    ]",  # noqa: E501
            "label_map[:, :-2].ravel(), label_map[:, 2:].ravel()]),\n        np.stack([label_map[:-1, :].ravel(), label_map[1:, :].ravel()]),\n    ]")],  # noqa: E501
          [LINE]),
    fault("diagonal neighbours counted (8-neighbourhood)",
          [(M, ROW_PAIRS + "    ]", ROW_PAIRS + "        np.stack([label_map[:-1, :-1].ravel(), label_map[1:, 1:].ravel()]),\n    ]")],  # noqa: E501
          [CORNER]),
    fault("adjacency matrix not symmetric",
          [(M, "(np.ones(2 * len(rows), bool), (np.r_[rows, cols], np.r_[cols, rows]))",
            "(np.ones(len(rows), bool), (rows, cols))")], [HORIZONTAL, VERTICAL]),
    fault("merged score not weighted by area",
          [(M, "weights = np.array([scores.get(leaf, 0.0) for leaf in range(len(clusters))]) * areas",
            "weights = np.array([scores.get(leaf, 0.0) for leaf in range(len(clusters))]) * (areas > 0)")],
          [MERGED]),
    fault("same-label merge misses horizontal borders",
          [(L, "        np.stack([label_map[:-1, :].ravel(), label_map[1:, :].ravel()], axis=1),\n", "")], [SAME]),
    fault("same-label merge across corners",
          [(L, "        np.stack([label_map[:-1, :].ravel(), label_map[1:, :].ravel()], axis=1),\n",
            "        np.stack([label_map[:-1, :].ravel(), label_map[1:, :].ravel()], axis=1),\n"
            "        np.stack([label_map[:-1, :-1].ravel(), label_map[1:, 1:].ravel()], axis=1),\n")], [SAME]),
]
