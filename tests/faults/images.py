"""The network edge of image downloads (issue 18): DNS rebinding, compressed bodies, exact caps, the deadline
across the credential retry, allow-list patterns."""

from tests.faults import fault

F = "ml_backend/images/fetch.py"
R = "ml_backend/images/resolver.py"
S = "ml_backend/core/settings.py"
E = "tests/backend/test_edges.py"
GZIP = f"{E}::test_a_compressed_body_is_capped_by_what_it_decompresses_to_not_by_its_content_length"
EXACT = f"{E}::test_a_download_of_exactly_max_image_bytes_is_read_and_one_byte_more_is_refused"
RETRY = f"{E}::test_the_retry_after_a_refused_access_token_spends_the_same_fetch_timeout"
LOOK_ALIKES = f"{E}::test_a_wildcard_pattern_allows_neither_the_apex_nor_look_alikes"
STREAMED = "                if total > self.max_bytes:"

FAULTS = [
    fault("no peer check after connecting (a DNS answer that changed is trusted)",
          [(F, "            self.peer_check(host, port, sock.getpeername()[0])\n", "            pass\n")],
          [f"{E}::test_a_dns_answer_that_changes_between_the_check_and_the_connect_is_refused_at_the_peer"]),
    fault("a body that declares its length is not counted as it streams",
          [(F, STREAMED, "                if not declared and total > self.max_bytes:")], [GZIP]),
    fault("the compressed bytes are counted and returned (body not decoded)",
          [(F, "for chunk in response.iter_content(_CHUNK_BYTES):",
            "for chunk in response.raw.stream(_CHUNK_BYTES, decode_content=False):")], [GZIP]),
    fault("declared length equal to the cap refused",
          [(F, "if declared.isdigit() and int(declared) > self.max_bytes:",
            "if declared.isdigit() and int(declared) >= self.max_bytes:")], [EXACT]),
    fault("streamed body equal to the cap refused", [(F, STREAMED, "                if total >= self.max_bytes:")],
          [EXACT, GZIP]),
    fault("local file equal to the cap refused", [(R, "            if size > limit:", "            if size >= limit:")],
          [f"{E}::test_a_local_file_of_exactly_max_image_bytes_is_read"]),
    fault("each download opens its own deadline (the retry after 401 gets a fresh FETCH_TIMEOUT)",
          [(F, "        if _current_budget() is not None:\n            yield\n            return\n", "")], [RETRY]),
    fault("the resolver sets no deadline around exchange and retry",
          [(R, "        with self.downloader.deadline():\n            if scheme in CLOUD_SCHEMES:",
            "        for _ in (0,):\n            if scheme in CLOUD_SCHEMES:")], [RETRY]),
    fault("allow-list patterns kept in their case",
          [(S, 'patterns = tuple(host.strip().lower() for host in value.split(",") if host.strip())',
            'patterns = tuple(host.strip() for host in value.split(",") if host.strip())')],
          [f"{E}::test_allowed_host_patterns_ignore_case_and_the_urls_port"]),
    fault("a port in an allow-list pattern accepted",
          [(S, ' or "/" in name or ":" in name)', ' or "/" in name)')],
          [f"{E}::test_an_allowed_host_pattern_with_a_port_or_scheme_is_refused_at_start"]),
    fault("*.domain also allows the apex domain",
          [(R, 'if pattern.startswith("*.") and host.endswith(pattern[1:]):',
            'if pattern.startswith("*.") and (host.endswith(pattern[1:]) or host == pattern[2:]):')], [LOOK_ALIKES]),
    fault("*.domain matched without its dot",
          [(R, "host.endswith(pattern[1:])", "host.endswith(pattern[2:])")], [LOOK_ALIKES]),
    fault("*.domain allows one label only",
          [(R, 'if pattern.startswith("*.") and host.endswith(pattern[1:]):',
            'if pattern.startswith("*.") and host.split(".", 1)[-1] == pattern[2:]:')],
          [f"{E}::test_a_wildcard_pattern_allows_every_sub_domain"]),
]
