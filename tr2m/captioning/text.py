"""Caption lines as the loaders and CLIP want them: one clean line that fits in 77 tokens.

`clean_line` turns raw model output into one sentence line (no newlines, no quotes, no chat
labels); `cap_tokens` shortens a line that CLIP would truncate, at a sentence or clause boundary
when one fits, so the kept words still say something whole; `object_sentence` writes an object
multiset as "An image with a sky, two people, ..., and a road."
"""
from __future__ import annotations

import re
from typing import Iterable, List, Sequence, Tuple

from .prompts import OBJECT_LIST_OPENING

CONTEXT_LENGTH = 77  # CLIP's text context, start and end tokens included
_QUOTES = re.compile(r"[\"“”„«»`´]|(?<!\w)'|'(?!\w)")
_LABEL = re.compile(r"^\s*(?:caption|description|answer|assistant)\s*:\s*", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_CLAUSE_BREAKS = (". ", "; ", ", ", " with ", " and ", " while ", " in ")


def clean_line(raw: str) -> str:
    """Raw model text -> one line: labels, quotes and newlines removed, spaces collapsed, capital
    first letter, closing full stop. Empty when nothing readable is left."""
    text = _LABEL.sub("", raw.replace("\r", " ").replace("\n", " "))
    text = _SPACE.sub(" ", _QUOTES.sub("", text)).strip(" -*:")
    if not any(ch.isalnum() for ch in text):
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text.rstrip(",;") + "."


def token_count(text: str) -> int:
    """CLIP tokens of `text` including the start and end tokens (77 means it was cut)."""
    from ..encoders.text import tokenize

    return int((tokenize(text, context_length=CONTEXT_LENGTH) != 0).sum())


def fits(text: str) -> bool:
    """True when CLIP reads the whole line (one token kept free: 77 is indistinguishable from cut)."""
    return token_count(text) < CONTEXT_LENGTH


def cap_tokens(line: str) -> str:
    """`line` if CLIP reads all of it, else its longest prefix that ends at a sentence or clause
    boundary and fits, else its longest fitting word prefix; always ends with a full stop."""
    if fits(line):
        return line
    for mark in _CLAUSE_BREAKS:
        cuts = [m.start() for m in re.finditer(re.escape(mark), line)]
        for cut in reversed(cuts):
            candidate = line[:cut].rstrip(" ,;.") + "."
            if len(candidate.split()) >= 4 and fits(candidate):
                return candidate
    words = line.split()
    lo, hi = 1, len(words)
    while lo < hi:  # binary search: the longest word prefix that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(" ".join(words[:mid]) + ".") else (lo, mid - 1)
    return " ".join(words[:lo]).rstrip(" ,;.") + "."


# ------------------------------------------------------------------------------ object lists
_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen twenty").split()
_IRREGULAR = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
              "knife": "knives", "sheep": "sheep", "skis": "skis", "scissors": "scissors", "shelf": "shelves"}


def plural(noun: str) -> str:
    """English plural of the last word of `noun` ("wine glass" -> "wine glasses")."""
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR:
        last = _IRREGULAR[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def counted(name: str, count: int) -> str:
    """'a car', 'an umbrella', 'two people', '21 cars'."""
    if count == 1:
        return ("an " if name[0] in "aeiou" else "a ") + name
    amount = _NUMBERS[count] if count < len(_NUMBERS) else str(count)
    return f"{amount} {plural(name)}"


def object_sentence(items: Sequence[Tuple[str, int]]) -> str:
    """[(name, count), ...] in the given order -> 'An image with a sky, two people, and a road.'"""
    parts = [counted(name, count) for name, count in items]
    if len(parts) == 1:
        return f"{OBJECT_LIST_OPENING} {parts[0]}."
    if len(parts) == 2:
        return f"{OBJECT_LIST_OPENING} {parts[0]} and {parts[1]}."
    return f"{OBJECT_LIST_OPENING} {', '.join(parts[:-1])}, and {parts[-1]}."


def shuffled_sentences(items: Iterable[Tuple[str, int]], n: int, rng) -> List[str]:
    """`n` object sentences over ONE multiset, each in an independent random order (numpy rng),
    trimmed to what CLIP reads (the tail objects go first: they are a random subset anyway)."""
    items = list(items)
    out = []
    for _ in range(n):
        order = [items[i] for i in rng.permutation(len(items))]
        while len(order) > 1 and not fits(object_sentence(order)):
            order.pop()
        out.append(object_sentence(order))
    return out
