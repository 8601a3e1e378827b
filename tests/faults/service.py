"""The service's limits and resources (issue 18): exact caps, Retry-After's value, places and cache records
given back when something fails, /webhook behind basic auth."""

from tests.faults import fault

A = "ml_backend/service/admission.py"
APP = "ml_backend/service/app.py"
C = "ml_backend/segmentation/cache.py"
E = "tests/backend/test_edges.py"
RETRY_AFTER = f"{E}::test_retry_after_is_the_mean_prediction_time_times_the_queue"
REWRITE = "tests/backend/test_cache_interrupted.py::test_a_rewrite_killed_part_way_leaves_the_old_entry_or_none_never_a_corrupt_one"  # noqa: E501

FAULTS = [
    fault("Retry-After ignores how many requests are queued",
          [(A, "math.ceil(mean * self.capacity)", "math.ceil(mean)")], [RETRY_AFTER]),
    fault("Retry-After rounded down", [(A, "math.ceil(mean * self.capacity)", "int(mean * self.capacity)")],
          [RETRY_AFTER]),
    fault("Retry-After not capped", [(A, "max(1, min(300, math.ceil(mean * self.capacity)))",
                                      "max(1, math.ceil(mean * self.capacity))")], [RETRY_AFTER]),
    fault("requests still queued counted as finished in the mean",
          [(A, 'done = self._metrics.count("queue", "admitted") - self._depth',
            'done = self._metrics.count("queue", "admitted")')], [RETRY_AFTER]),
    fault("Retry-After 0 before any prediction finished",
          [(A, "mean = self._metrics.count(\"seconds\", \"predict\") / done if done else 1.0",
            "mean = self._metrics.count(\"seconds\", \"predict\") / done if done else 0.0"),
           (A, "return max(1, min(300,", "return max(0, min(300,")],
          [f"{E}::test_retry_after_is_one_second_before_any_prediction_finished"]),
    fault("the queue admits one request more than its size",
          [(A, "if self._depth >= self.capacity:", "if self._depth > self.capacity:")],
          [f"{E}::test_retry_after_is_one_second_before_any_prediction_finished"]),
    fault("an error escaping a request keeps its place",
          [(A, "        try:\n            yield\n        finally:\n            with self._lock:",
            "        yield\n        if True:\n            with self._lock:")],
          [f"{E}::test_an_error_escaping_a_request_gives_its_place_back"]),
    fault("503 answers a fixed Retry-After",
          [(APP, '503, {"Retry-After": str(error.retry_after)}', '503, {"Retry-After": "1"}')],
          [f"{E}::test_the_app_answers_503_with_the_queues_retry_after"]),
    fault("a request of exactly MAX_TASKS_PER_REQUEST refused",
          [(APP, "if len(tasks) > settings.max_tasks_per_request:", "if len(tasks) >= settings.max_tasks_per_request:")],  # noqa: E501
          [f"{E}::test_a_request_of_exactly_max_tasks_per_request_is_answered"]),
    fault("a body of exactly MAX_REQUEST_BYTES refused",
          [(APP, 'app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes',
            'app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes - 1')],
          [f"{E}::test_a_body_of_exactly_max_request_bytes_is_read_and_one_byte_more_is_refused"]),
    fault("an image of exactly MAX_IMAGE_PIXELS refused",
          [("segmentor/images.py", "if width * height > max_pixels:", "if width * height >= max_pixels:")],
          [f"{E}::test_an_image_of_exactly_max_image_pixels_decodes_and_one_pixel_more_is_refused"]),
    fault("/webhook left open under basic auth",
          [(APP, 'OPEN_ENDPOINTS = frozenset({"health", "static"})',
            'OPEN_ENDPOINTS = frozenset({"health", "static", "webhook"})')],
          [f"{E}::test_the_webhook_sits_behind_basic_auth"]),
    fault("a cache rewrite keeps the old record while the arrays are replaced",
          [(C, "            scores_path.unlink(missing_ok=True)\n            _write_atomic(label_path, arrays)",
            "            _write_atomic(label_path, arrays)")], [REWRITE]),
    fault("a cache record written before its arrays",
          [(C, "            _write_atomic(label_path, arrays)\n            _write_atomic(scores_path, json.dumps(record).encode())",  # noqa: E501
            "            _write_atomic(scores_path, json.dumps(record).encode())\n            _write_atomic(label_path, arrays)")],  # noqa: E501
          ["tests/backend/test_cache_interrupted.py::test_a_first_write_killed_part_way_leaves_no_entry"]),
]
