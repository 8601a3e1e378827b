"""Zero-shot labels in the backend: CLIP's dense grid cached beside the segmentation, label words cached on disk.

A control with zero-shot on (``emerdiff-zero-shot``, default on when EMERDIFF_CLIP_MODEL is set) gets each
segment's label from CLIP (``segmentor.zeroshot``): the image's dense grid pooled in the segment, compared
with the text embeddings of each label's words. What it costs and where it is kept:

- the grid: computed once per image and CLIP (identity, mode), stored in ``CACHE_DIR/zero-shot/grids/<key>/``
  beside (never inside) the segmentation's entry, so changing CLIP never re-runs EmerDiff and changing a
  label's words re-labels from both caches in milliseconds;
- the words: each word's template-ensembled embedding stored in ``CACHE_DIR/zero-shot/text/<clip>/``, computed
  at the first prediction that needs it, never in ``/setup`` (Label Studio gives /setup 3 s);
- the model version carries :meth:`ZeroShot.identity` and each control's words, threshold and fallback.

The one rule with label learning (:func:`one_rule`): a confident learnt label overrides zero-shot, except
where zero-shot confidently picks a label the memory has no examples of yet (k-NN cannot vote for it).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import numpy as np

from ml_backend.core.errors import ImageDecodeError
from ml_backend.core.label_config import RegionTarget
from ml_backend.core.metrics import Metrics
from ml_backend.core.settings import Settings
from ml_backend.segmentation.cache import CachedSegmentation, _write_atomic, stored_features
from segmentor.images import ImageError, load_image
from segmentor.labelling import LabelGuess
from segmentor.zeroshot import ClipModel, classify_segments, dense_grid
from segmentor.zeroshot.dense import LOGIT_SCALES
from segmentor.zeroshot.text import TEMPLATE_SETS, word_embeddings

logger = logging.getLogger(__name__)

FOLDER = "zero-shot"  # under CACHE_DIR; not a hex fingerprint, so never mistaken for a segmentation entry
# Two labels whose closest words' text embeddings have a cosine above this are logged as near duplicates:
# CLIP can hardly tell them apart, so one of them takes most segments (docs/zero-shot.md, "Risks"). A
# judgement, not measured on a real CLIP: meant for typos, plurals and synonyms (docs/LABELS.md).
NEAR_DUPLICATE_COSINE = 0.95
NEAR_DUPLICATES_LOGGED = 5


class ZeroShot:
    """The loaded CLIP with its grid and word caches; one per process, beside the diffusion model."""

    def __init__(self, clip: ClipModel, settings: Settings, metrics: Metrics, lock: threading.Lock) -> None:
        self.clip = clip
        self.mode = settings.clip_mode
        self.templates = TEMPLATE_SETS[settings.clip_templates]
        self.logit_scale = LOGIT_SCALES[self.mode]
        self.metrics = metrics
        # The device lock of the segmentation: one model at a time on the GPU (and the CPU's cores).
        self.lock = lock
        root = settings.cache_dir / FOLDER if settings.cache_dir is not None else None
        self._grids = root / "grids" / _digest(self.clip.identity, self.mode)[:16] if root else None
        self._texts = root / "text" / _digest(self.clip.identity, *self.templates)[:16] if root else None
        self._words: dict[str, np.ndarray] = {}
        self._words_lock = threading.Lock()
        self._compared: set[tuple] = set()  # label-word sets already checked for near duplicates

    @property
    def identity(self) -> dict:
        """What changes every zero-shot label: the weights, the mode, the templates, the logit scale."""
        return {"model": self.clip.identity, "mode": self.mode, "templates": list(self.templates),
                "logit_scale": self.logit_scale}

    # --- the dense grid ----------------------------------------------------------------------------

    def grid(self, image_sha256: str, image: Callable[[], bytes], max_pixels: int) -> np.ndarray:
        """The image's (gh, gw, D) grid, from the cache when this CLIP and mode made it before.

        ``image()`` gives the file's bytes (a download, only on a miss). A fresh grid is rounded to the
        cache's float16 first, so its first answer equals every later one from the cache.
        """
        path = self._grid_path(image_sha256)
        cached = self._read_grid(path)
        if cached is not None:
            self.metrics.increment("zero_shot", "grid_hits")
            return cached
        try:
            decoded = load_image(image(), max_pixels=max_pixels)
        except ImageError as error:
            raise ImageDecodeError(str(error)) from error
        with self.lock, self.metrics.timed("clip_grid"):
            grid = stored_features(dense_grid(self.clip, decoded, self.mode))
        self.metrics.increment("zero_shot", "grid_misses")
        if path is not None:
            buffer = io.BytesIO()
            np.save(buffer, grid.astype(np.float16), allow_pickle=False)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_atomic(path, buffer.getvalue())
            except OSError as error:
                logger.warning("cannot write the CLIP grid %s (%s); the labels are unaffected", path, error)
        return grid

    def _grid_path(self, image_sha256: str) -> Path | None:
        if self._grids is None:
            return None
        if len(image_sha256) != 64 or any(c not in "0123456789abcdef" for c in image_sha256):
            raise ValueError(f"image key must be a sha256 hex digest, got {image_sha256!r}")
        return self._grids / image_sha256[:2] / f"{image_sha256}.npy"

    def _read_grid(self, path: Path | None) -> np.ndarray | None:
        if path is None or not path.exists():
            return None
        try:
            grid = np.load(path, allow_pickle=False)
            if grid.ndim != 3:
                raise ValueError(f"a grid has 3 dimensions, this one {grid.ndim}")
            return grid.astype(np.float32)
        except (OSError, ValueError, EOFError) as error:
            logger.warning("CLIP grid %s is corrupt (%s): computed again", path, error)
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    # --- the words ----------------------------------------------------------------------------------

    def embeddings(self, words: Mapping[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
        """Label -> (n_words, D) embeddings; each word from memory, the disk cache, or CLIP's text tower."""
        unique = list(dict.fromkeys(word for label_words in words.values() for word in label_words))
        with self._words_lock:
            missing = [word for word in unique if word not in self._words]
        for word in list(missing):
            vector = self._read_word(word)
            if vector is not None:
                with self._words_lock:
                    self._words[word] = vector
                missing.remove(word)
        if missing:
            with self.lock, self.metrics.timed("clip_text"):
                vectors = word_embeddings(self.clip, missing, self.templates)
            self.metrics.increment("zero_shot", "words_encoded", len(missing))
            for word, vector in zip(missing, vectors, strict=True):
                self._write_word(word, vector)
                with self._words_lock:
                    self._words[word] = vector
        with self._words_lock:
            embedded = {label: np.stack([self._words[word] for word in label_words])
                        for label, label_words in words.items()}
        self._warn_near_duplicates(words, embedded)
        return embedded

    def _warn_near_duplicates(self, words: Mapping[str, tuple[str, ...]], embedded: Mapping[str, np.ndarray]) -> None:
        """Log the pairs of labels whose closest words nearly coincide, once per pair of word sets.

        A label scores its best word (segmentor.zeroshot.classify), so its closest word to the other label's
        words is what confuses the two. At most NEAR_DUPLICATES_LOGGED pairs are named (the closest first),
        then a count: a weak CLIP (such as the bundled toy) puts most pairs above the line.
        """
        labels = sorted(embedded)
        key = tuple((label, tuple(words[label])) for label in labels)
        with self._words_lock:
            if key in self._compared:
                return
            self._compared.add(key)
        close = []
        for index, first in enumerate(labels):
            for second in labels[index + 1:]:
                similarity = embedded[first] @ embedded[second].T
                row, column = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
                cosine = float(similarity[row, column])
                pair = (first, tuple(words[first]), second, tuple(words[second]))
                if cosine > NEAR_DUPLICATE_COSINE and pair not in self._compared:
                    close.append((cosine, first, second, words[first][row], words[second][column], pair))
        close.sort(key=lambda item: -item[0])
        with self._words_lock:
            self._compared.update(item[-1] for item in close)
        for cosine, first, second, first_word, second_word, _ in close[:NEAR_DUPLICATES_LOGGED]:
            logger.warning(
                "zero-shot labels %r and %r nearly coincide for CLIP: cosine %.3f between their words %r and %r "
                "(above %.2f), so CLIP can hardly tell them apart; give one of them distinct words "
                "(emerdiff-prompt) or merge them", first, second, cosine, first_word, second_word,
                NEAR_DUPLICATE_COSINE)
        if len(close) > NEAR_DUPLICATES_LOGGED:
            logger.warning("%d more pairs of zero-shot labels nearly coincide for CLIP (cosine above %.2f)",
                           len(close) - NEAR_DUPLICATES_LOGGED, NEAR_DUPLICATE_COSINE)

    def _word_path(self, word: str) -> Path | None:
        return self._texts / f"{_digest(word)[:32]}.json" if self._texts is not None else None

    def _read_word(self, word: str) -> np.ndarray | None:
        path = self._word_path(word)
        if path is None or not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            if record["word"] != word:
                raise ValueError("it holds another word")
            return np.asarray(record["embedding"], dtype=np.float32)
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("cached word embedding %s is unreadable (%s): encoded again", path, error)
            return None

    def _write_word(self, word: str, vector: np.ndarray) -> None:
        path = self._word_path(word)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, json.dumps({"word": word, "embedding": vector.tolist()}).encode())
        except OSError as error:
            logger.warning("cannot cache the word embedding %s (%s)", path, error)

    # --- labels -------------------------------------------------------------------------------------

    def guesses(self, target: RegionTarget, segmentation: CachedSegmentation,
                grid: np.ndarray) -> dict[int, LabelGuess]:
        """Each segment's best label among the control's and its probability (no threshold applied)."""
        embeddings = self.embeddings(dict(target.words))
        best = classify_segments(grid, segmentation.label_map, embeddings, logit_scale=self.logit_scale,
                                 threshold=0.0, fallback=None)
        return {segment: LabelGuess(label, probability) for segment, (label, probability) in best.items()}


def one_rule(learnt: Mapping[int, LabelGuess] | None, zero_shot: Mapping[int, LabelGuess], known: Collection[str],
             target: RegionTarget) -> dict[int, LabelGuess]:
    """Each segment's label from its learnt guess and its zero-shot guess.

    A learnt guess at or above ``emerdiff-threshold`` wins, unless zero-shot's guess is at or above
    ``emerdiff-zero-shot-threshold`` and names a label the memory has no examples of (``known``: the labels
    the classifier learnt), which k-NN could never vote for. Else a confident zero-shot guess; else the
    zero-shot fallback (background label or ``emerdiff-label``) with the probability it lost with.
    """
    learnt = learnt or {}
    labelled = {}
    for segment in sorted(set(learnt) | set(zero_shot)):
        taught, guess = learnt.get(segment), zero_shot.get(segment)
        confident = guess is not None and guess.confidence >= target.zero_shot_threshold
        if taught is not None and taught.confidence >= target.threshold and not (
            confident and guess.label not in known
        ):
            labelled[segment] = taught
        elif confident:
            labelled[segment] = guess
        elif guess is not None:
            labelled[segment] = LabelGuess(target.zero_shot_fallback, guess.confidence)
        else:
            labelled[segment] = taught
    return labelled


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()
