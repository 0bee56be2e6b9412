"""The image describer: a trained glyph classifier that answers in words about the images a task names."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from metarl.engine import save_checkpoint
from metarl.errors import CheckpointError
from metarl.society import ABSTAIN, UNKNOWN, Message
from metarl.society.describer import Gallery, ImageDescriber, image_refs
from metarl.supervised.vision.data import glyphs

DIGITS = [str(k) for k in range(10)]


def test_describer_names_glyph_classes_well_above_chance(glyph_checkpoint):
    gallery = Gallery()
    describer = ImageDescriber.from_checkpoint(glyph_checkpoint, gallery, class_names=DIGITS)
    test = glyphs(10, 100).test  # images the classifier never trained on
    labels, confidence = describer.classify(test.images)
    assert (labels == test.labels).float().mean().item() > 0.6  # chance: 0.1
    assert confidence.min() > 0 and confidence.max() <= 1
    # in words, through the gallery: right for most images, one answer for every name the request gives
    right = 0
    for i in range(0, 150, 10):
        with gallery.showing({"left": test.images[i], "right": test.images[i + 5]}):
            said = describer.respond([Message("user", "What do image:left and image:right show?")]).content
        left, right_ = int(test.labels[i]), int(test.labels[i + 5])
        right += said == f"image:left shows class {left}; image:right shows class {right_}."
    assert right >= 8  # of 15 pairs (chance: 0.01 a pair)
    assert gallery.images == {}  # the gallery shows a task's images only while it is worked on


def test_describer_reads_the_task_abstains_and_says_what_it_cannot_see(glyph_checkpoint):
    gallery = Gallery({"a": glyphs(10, 100).test.images[0]})
    describer = ImageDescriber.from_checkpoint(glyph_checkpoint, gallery, class_names=DIGITS, name="eye")
    task = Message("user", "What is the class of image:a?", name="task", intent="task")
    said = describer.respond([task, Message("user", "Describe them.", name="leader", intent="answer")])
    assert said.name == "eye" and said.content.startswith("image:a shows class ")  # the task's images
    assert describer.answer("image:b and image:a").startswith("I cannot see image:b; image:a shows class")
    assert describer.answer("What is 2 + 2?") == UNKNOWN
    assert describer.respond([Message("user", "1. x", intent="vote")]).content == ABSTAIN
    assert image_refs("image:left plus image:right, image:left again") == ["left", "right"]


def test_describer_refuses_a_checkpoint_that_is_not_an_image_classifier(tmp_path):
    path = save_checkpoint(tmp_path / "lm.pt", nn.Linear(2, 2), counters={"step": 0},
                           config={"env": {"family": "lm"}})
    with pytest.raises(CheckpointError, match="image classifier"):
        ImageDescriber.from_checkpoint(path, Gallery())
