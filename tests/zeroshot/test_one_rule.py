"""The one rule: a confident learnt label overrides zero-shot, except for a label the memory has no examples of."""

from __future__ import annotations

import numpy as np

from ml_backend.core.label_config import ProjectConfig
from ml_backend.core.settings import Settings
from ml_backend.labels.learning import LabelLearning
from ml_backend.labels.zeroshot import one_rule
from ml_backend.segmentation.cache import CachedSegmentation
from segmentor.labelling import LabelClassifier, LabelExample, LabelGuess

CONFIG = ('<View><Image name="image" value="$image"/><PolygonLabels name="poly" toName="image" '
          'emerdiff-threshold="0.6" emerdiff-zero-shot-threshold="0.5" emerdiff-label="Object">'
          '<Label value="Object"/><Label value="Red"/><Label value="Green"/><Label value="Background"/>'
          '</PolygonLabels></View>')


def _target(config: str = CONFIG):
    [target] = ProjectConfig.parse(config, Settings(clip_model="bundled")).targets
    return target


def test_each_branch_of_the_rule():
    target = _target()
    learnt = {1: LabelGuess("Red", 0.9), 2: LabelGuess("Red", 0.9), 3: LabelGuess("Object", 0.3),
              4: LabelGuess("Object", 0.3), 5: LabelGuess("Red", 0.9)}
    zero = {1: LabelGuess("Green", 0.8),   # Green has no examples: zero-shot wins over a confident learnt label
            2: LabelGuess("Object", 0.8),  # a known label: the confident learnt label wins
            3: LabelGuess("Green", 0.8),   # learnt unsure: zero-shot
            4: LabelGuess("Green", 0.2),   # both unsure: the background label, with zero-shot's probability
            5: LabelGuess("Green", 0.2)}   # zero-shot unsure of an unknown label: the learnt label stands
    labelled = one_rule(learnt, zero, known=("Object", "Red"), target=target)
    assert labelled == {1: LabelGuess("Green", 0.8), 2: LabelGuess("Red", 0.9), 3: LabelGuess("Green", 0.8),
                        4: LabelGuess("Background", 0.2), 5: LabelGuess("Red", 0.9)}
    # Nothing learnt: zero-shot alone; exactly at the threshold counts as sure.
    assert one_rule(None, {7: LabelGuess("Red", 0.5)}, (), target) == {7: LabelGuess("Red", 0.5)}
    no_background = _target(CONFIG.replace('<Label value="Background"/>', ""))
    assert one_rule(None, {7: LabelGuess("Red", 0.49)}, (), no_background) == {7: LabelGuess("Object", 0.49)}


def test_learning_label_applies_the_rule_with_a_real_classifier():
    """Segments 0 and 1 look like learnt Red and Object examples; zero-shot names unlearnt labels for 1, 2."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)).astype(np.float32)
    label_map = np.repeat(np.array([[0, 1, 2]], np.int32), 6, axis=0).repeat(2, axis=1)  # (6, 6)
    features = np.repeat(centres[None], 3, axis=0).repeat(1, axis=1)  # (3, 3, 8): column j is segment j
    segmentation = CachedSegmentation(label_map=label_map, scores={0: 0.5, 1: 0.5, 2: 0.5}, features=features)
    examples = [LabelExample(f"r{i}", "poly", label, centres[k] + 0.01 * rng.normal(size=8).astype(np.float32), 10)
                for i, (label, k) in enumerate([("Red", 0), ("Red", 0), ("Object", 1), ("Object", 1)])]
    classifier = LabelClassifier(examples)
    zero = {0: LabelGuess("Object", 0.9), 1: LabelGuess("Green", 0.9), 2: LabelGuess("Background", 0.7)}
    learning = LabelLearning(memory=None, feature_space="test")
    labelled = learning.label(classifier, _target(), segmentation, zero)
    # 0: learnt Red is sure and zero-shot's Object is learnt too; 1 and 2: zero-shot names unlearnt labels.
    assert labelled.labels == {0: "Red", 1: "Green", 2: "Background"}
    assert labelled.scores[1] == 0.9
    # Without zero-shot the same classifier keeps its learnt labels; with zero-shot alone, zero-shot's.
    assert learning.label(classifier, _target(), segmentation).labels[1] == "Object"
    assert learning.label(None, _target(), segmentation, zero).labels == {0: "Object", 1: "Green", 2: "Background"}
    assert learning.label(None, _target(), segmentation) is None
