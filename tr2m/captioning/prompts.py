"""The two kinds of caption line TR2M reads, the prompts that make them, and why.

A TR2M caption file has 15 lines: 10 scene descriptions from a vision-language model, then 5
object lists. Training draws one line at random, evaluation reads line 0 (a description). The
released files (KITTI, NYU, VOID captions from the authors, made with LLaVA v1.6) show:

* descriptions: single English sentences of 6 to 25 words, most opening "The image shows /
  depicts / captures ...", a few bare noun phrases ("A tree-lined street with parked cars.");
  the same sentence can repeat within a file (independent samples of one model);
* object lists: "An image with a road, a tree, twenty cars, ..., and a sky." - the classes of a
  COCO-panoptic segmentation model with instance counts as words, stuff classes (sky, road, wall)
  once, the five lines being shuffled orderings of ONE multiset.

Reasoning behind the prompts:

* One sentence. CLIP's text encoder reads 77 tokens (75 after the start/end tokens); a paragraph
  would be cut mid-way, so the model is asked for what fits, and `text.cap_tokens` trims the rest
  at a clause boundary.
* Two phrasings, five samples each. The released descriptions vary in length; a short prompt and
  a place-and-objects prompt give both ends of that range, which is the augmentation training
  relies on (a random line per step).
* Name the place and the main objects. TR2M's caption carries the metric scale: the kind of
  place (a kitchen, a highway) and familiar objects of known size (cars, chairs, doors) are what
  the text adds to the picture; colours, moods and people's actions add nothing to depth.
* No question of depth or distance. A VLM's guessed distances are unreliable, and the authors'
  lines contain none: asking for them would move the captions out of the training distribution.
* Line 0 is the first sample of the first prompt: evaluation and `tr2m-caption video` use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class DescribePrompt:
    """One instruction to the vision-language model and how many samples it gives per image."""

    text: str
    samples: int


DESCRIBE_PROMPTS: Tuple[DescribePrompt, ...] = (
    DescribePrompt("Describe this image in one sentence.", samples=5),
    DescribePrompt("In one sentence, describe the place shown in this image and the main objects in it.",
                   samples=5),
)

# The object-list sentence: its opening words and how many shuffled orderings a file holds.
OBJECT_LIST_OPENING = "An image with"
OBJECT_LISTS = 5

DESCRIPTIONS = sum(p.samples for p in DESCRIBE_PROMPTS)
LINES_PER_FILE = DESCRIPTIONS + OBJECT_LISTS
