"""Which content a task's image reference resolved to: reference -> SHA-256 of the bytes, in memory.

The segmentation cache is keyed by content, so finding a task's cached segmentation costs a download
unless the content of its reference is known. Remembering it makes a smart-tool click on a predicted
task, and a repeated "Retrieve Predictions", answer from the cache with no download.

Bounded (least recently used references go first). A changed reference is a different key, so it is
downloaded again; the same reference is taken to keep its content while remembered (Label Studio's
upload names carry a hash; a URL whose content is replaced in place keeps its old segmentation until its
entry ages out or the backend restarts).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

# About 200 bytes a reference: 100,000 references hold ~20 MB.
DEFAULT_CAPACITY = 100_000


class ContentMemory:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._contents: OrderedDict[str, str] = OrderedDict()

    def get(self, reference: str) -> str | None:
        """The SHA-256 ``reference`` last resolved to, or None."""
        with self._lock:
            sha256 = self._contents.get(reference)
            if sha256 is not None:
                self._contents.move_to_end(reference)
            return sha256

    def remember(self, reference: str, sha256: str) -> None:
        with self._lock:
            self._contents[reference] = sha256
            self._contents.move_to_end(reference)
            while len(self._contents) > self.capacity:
                self._contents.popitem(last=False)

    def forget(self, reference: str) -> None:
        with self._lock:
            self._contents.pop(reference, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._contents)
