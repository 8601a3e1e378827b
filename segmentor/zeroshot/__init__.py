"""Zero-shot labels for EmerDiff segments: CLIP's dense text-aligned patch embeddings pooled in each segment.

The EmerDiff paper's annotation-free open-vocabulary route (its Table 3): average a vision-language model's
pixel embeddings inside each mask and classify the mask against text embeddings of the class names.
``loading`` turns a reference into a CLIP, ``dense`` gives the patch grid in CLIP's text space (MaskCLIP,
SCLIP, ClearCLIP or NACLIP last block), ``text`` the label embeddings (prompt templates, synonyms),
``classify`` the segment labels. torch + transformers only; the ML backend builds on it.
"""

from segmentor.zeroshot.classify import classify_pixels, classify_segments
from segmentor.zeroshot.dense import DEFAULT_MODE, MODES, dense_grid
from segmentor.zeroshot.loading import BUNDLED_CLIP_DIR, ClipModel, load_clip
from segmentor.zeroshot.text import TEMPLATES, label_embeddings

__all__ = [
    "BUNDLED_CLIP_DIR",
    "DEFAULT_MODE",
    "MODES",
    "TEMPLATES",
    "ClipModel",
    "classify_pixels",
    "classify_segments",
    "dense_grid",
    "label_embeddings",
    "load_clip",
]
