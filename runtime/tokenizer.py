"""OpenAI CLIP tokenizer without torch: the same ids as `open_clip.tokenize`.

Reads the `tokenizers` JSON written by `export.tokenizer.build_clip_tokenizer` (OpenAI's regex
pre-tokenizer + byte-level BPE) and adds what that file cannot hold: OpenAI's text cleaning and
the framing of every caption into `context_length` ids (SOT, tokens, EOT, zero padding; a caption
that is too long keeps its first tokens and ends with EOT at the last position).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import ftfy
import numpy as np
from tokenizers import Tokenizer

from runtime.errors import BundleError, CaptionError

DEFAULT_CONTEXT_LENGTH = 77
SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
PAD_TOKEN_ID = 0


def clean_caption(text: str) -> str:
    """OpenAI CLIP's cleaning: ftfy, HTML unescaped twice, whitespace runs -> one space, lowercase.

    Lowercasing stays in Python (not in the tokenizer file) because str.lower applies context
    rules, e.g. a word-final capital sigma becomes 'ς', that a per-character lowercase misses.
    """
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    # split/join also strips both ends, which is all that open_clip's .strip() calls do.
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """Captions -> int64 token ids [B, context_length], identical to `open_clip.tokenize`."""

    def __init__(
        self, *, tokenizer: Tokenizer, context_length: int = DEFAULT_CONTEXT_LENGTH
    ) -> None:
        """Wrap a loaded CLIP `tokenizers.Tokenizer`; context_length counts SOT and EOT (>= 2)."""
        if context_length < 2:
            raise ValueError(
                f"context_length must be at least 2 (room for SOT and EOT), got {context_length}"
            )
        self.context_length = context_length
        self.sot_token_id = required_token_id(tokenizer, SOT_TOKEN)
        self.eot_token_id = required_token_id(tokenizer, EOT_TOKEN)
        self._tokenizer = tokenizer
        self._special_ids = {SOT_TOKEN: self.sot_token_id, EOT_TOKEN: self.eot_token_id}

    @classmethod
    def from_file(
        cls, path: str | Path, *, context_length: int = DEFAULT_CONTEXT_LENGTH
    ) -> ClipTokenizer:
        """Load the tokenizer JSON written by `export.tokenizer.build_clip_tokenizer`."""
        path = Path(path)
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception for missing or bad files
            raise BundleError(
                f"cannot read the tokenizer file {path} ({error}): "
                "rebuild it with export.tokenizer.build_clip_tokenizer"
            ) from error
        return cls(tokenizer=tokenizer, context_length=context_length)

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """Tokenize one caption or a sequence of captions.

        Args:
            texts: a string, or a sequence of B strings.

        Returns:
            int64 array [B, context_length] (B = 1 for a single string): SOT, the caption's
            tokens, EOT, then zeros; a caption longer than context_length - 2 tokens is cut and
            its last position holds EOT.
        """
        captions = [clean_caption(text) for text in as_caption_list(texts)]
        ids = np.full((len(captions), self.context_length), PAD_TOKEN_ID, dtype=np.int64)
        for row, caption_ids in zip(ids, self._encode_cleaned(captions)):
            self._write_framed(row, caption_ids)
        return ids

    def _encode_cleaned(self, captions: list[str]) -> list[list[int]]:
        """BPE ids of cleaned captions, without SOT/EOT."""
        encodings = self._tokenizer.encode_batch(captions, add_special_tokens=False)
        return [
            self._encode_by_piece(caption) if self._spells_special_token(caption) else encoding.ids
            for caption, encoding in zip(captions, encodings)
        ]

    def _spells_special_token(self, caption: str) -> bool:
        return any(token in caption for token in self._special_ids)

    def _encode_by_piece(self, caption: str) -> list[int]:
        """Ids of a caption that spells out '<start_of_text>' or '<end_of_text>'.

        OpenAI's regex lists these strings as alternatives, so such a piece becomes the special
        id; whether it is a piece depends on what precedes it ('!!<end_of_text>' splits as '!!<',
        'end', ...). The file's pre-tokenizer reproduces that split but BPE would break the
        special piece apart, so these rare captions are encoded piece by piece here. Registering
        the specials as added tokens instead would split them out before the regex: wrong ids.
        """
        ids: list[int] = []
        for piece, _ in self._tokenizer.pre_tokenizer.pre_tokenize_str(caption):
            if piece in self._special_ids:
                ids.append(self._special_ids[piece])
            else:
                ids.extend(token.id for token in self._tokenizer.model.tokenize(piece))
        return ids

    def _write_framed(self, row: np.ndarray, caption_ids: list[int]) -> None:
        """Fill a padded [context_length] row with SOT, at most context_length - 2 ids, EOT."""
        kept = caption_ids[: self.context_length - 2]
        row[0] = self.sot_token_id
        row[1 : len(kept) + 1] = kept
        row[len(kept) + 1] = self.eot_token_id


def required_token_id(tokenizer: Tokenizer, token: str) -> int:
    """Id of `token` in the tokenizer's vocabulary; BundleError if the file is not CLIP's."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise BundleError(
            f"the tokenizer has no {token!r} token, so it is not a CLIP tokenizer: "
            "rebuild it with export.tokenizer.build_clip_tokenizer"
        )
    return token_id


def as_caption_list(texts: str | Sequence[str]) -> list[str]:
    """A single caption or a sequence of captions as a list of strings."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)):
        raise CaptionError("captions must be str, got bytes: decode them first (e.g. UTF-8)")
    try:
        captions = list(texts)
    except TypeError as error:
        raise CaptionError(f"captions must be a str or a sequence of str, got {texts!r}") from error
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise CaptionError(f"caption {index} is {type(caption).__name__}, expected str")
    return captions
