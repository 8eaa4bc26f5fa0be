"""Build the CLIP tokenizer file that travels with the text graph.

The runtime cannot import open_clip (it pulls in torch), so this writes OpenAI CLIP's byte-level
BPE (the vocabulary bundled with open_clip) as one HuggingFace `tokenizers` JSON file. The file
holds what `tokenizers` can express exactly: the pre-tokenizer regex, the byte-to-unicode mapping,
the BPE vocabulary and merges, and a decoder. Text cleaning (ftfy, HTML unescaping, lowercasing
with Python's rules) and the SOT/EOT framing to 77 ids stay in `runtime.tokenizer.ClipTokenizer`,
which together with this file reproduces `open_clip.tokenize` id for id.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import sys
from pathlib import Path

import regex
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from runtime.atomic import atomic_write_bytes

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
END_OF_WORD_SUFFIX = "</w>"
# OpenAI keeps the first 49152 - 256 - 2 merges so that bytes + merges + 2 specials = 49408 ids.
NUM_MERGES = 49152 - 256 - 2

# OpenAI's pre-tokenizer regex, in its order: special tokens and contractions, then runs of
# letters, single digits, runs of anything else that is not whitespace. open_clip compiles it with
# the `regex` module and re.IGNORECASE.
REGEX_LITERALS = (SOT_TOKEN, EOT_TOKEN, "'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
REGEX_LETTER, REGEX_DIGIT, REGEX_OTHER = r"[\p{L}]", r"[\p{N}]", r"[^\s\p{L}\p{N}]"
SURROGATES = range(0xD800, 0xE000)


def build_clip_tokenizer(out_path: str | Path) -> Path:
    """Write OpenAI CLIP's BPE tokenizer as a `tokenizers` JSON file.

    Args:
        out_path: destination file (conventionally ``tokenizer.json``); its folder is created.

    Returns:
        The written path. Load it with ``runtime.tokenizer.ClipTokenizer.from_file``, which adds
        the cleaning and the [B, 77] framing that the file alone does not do.
    """
    merges = read_clip_merges(find_open_clip_bpe())
    tokenizer = Tokenizer(
        models.BPE(vocab=clip_vocab(merges), merges=merges, end_of_word_suffix=END_OF_WORD_SUFFIX)
    )
    tokenizer.pre_tokenizer = clip_pre_tokenizer()
    tokenizer.decoder = clip_decoder()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(out_path, tokenizer.to_str().encode("utf-8"))


def find_open_clip_bpe() -> Path:
    """Path of the BPE merges file bundled with open_clip, found without importing open_clip."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "open_clip is not installed: install the torch extra (pip install 'tr2m[torch]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BPE_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"open_clip's BPE vocabulary is missing at {path}: reinstall open_clip_torch"
        )
    return path


def read_clip_merges(bpe_path: Path) -> list[tuple[str, str]]:
    """The NUM_MERGES merge rules of a CLIP BPE file (gzip text, one header line), by rank."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(pair) != 2 for pair in merges):
        raise ValueError(
            f"{bpe_path} is not a CLIP BPE file: expected a header and {NUM_MERGES} 'a b' lines"
        )
    return merges


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's token -> id map: 256 bytes, the same with '</w>', each merge result, SOT, EOT."""
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [char + END_OF_WORD_SUFFIX for char in byte_chars]
    tokens += ["".join(pair) for pair in merges] + [SOT_TOKEN, EOT_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def clip_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """OpenAI's regex split (keep the matches, drop the spaces between) then bytes -> unicode."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(clip_split_pattern()), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def clip_decoder() -> decoders.Decoder:
    """Ids -> text like open_clip's decode: each '</w>' becomes a space (a trailing one too).

    '</w>' is first replaced by the byte-level character of a space, so that the ByteLevel step
    turns it into b" " along with the other bytes.
    """
    space = bytes_to_unicode()[ord(" ")]
    return decoders.Sequence([decoders.Replace(END_OF_WORD_SUFFIX, space), decoders.ByteLevel()])


def clip_split_pattern() -> str:
    """OpenAI's pre-tokenizer regex for `tokenizers` (Oniguruma), as explicit code point sets.

    `\\p{L}` and `\\p{N}` follow each engine's Unicode tables, and Oniguruma's differ from the
    `regex` module's that open_clip uses (about 17,000 newer letters; U+0345, which open_clip's
    case-insensitive pattern drops). Oniguruma's case-insensitive mode also folds ligatures
    ('<\\ufb06art_of_text>' matches the SOT literal). So every class and every case-insensitive
    letter is spelled out as the code points the installed `regex` module matches, which makes
    the split identical to open_clip's for every code point.

    Returns:
        The pattern string (about 25 kB), with no inline flags.
    """
    literals = [case_insensitive_literal(literal) for literal in REGEX_LITERALS]
    letters, digit, other = (
        onig_class(regex_class_ranges(pattern))
        for pattern in (REGEX_LETTER, REGEX_DIGIT, REGEX_OTHER)
    )
    return "|".join([*literals, f"{letters}+", digit, f"{other}+"])


def case_insensitive_literal(literal: str) -> str:
    """`literal` as an Oniguruma pattern matching what `regex` matches with IGNORECASE."""
    return "".join(onig_class(regex_class_ranges(regex.escape(char))) for char in literal)


def regex_class_ranges(class_pattern: str) -> list[tuple[int, int]]:
    """Inclusive code point ranges that a one-character `regex` pattern matches (IGNORECASE).

    Args:
        class_pattern: e.g. r"[\\p{L}]"; compiled like open_clip's pattern.

    Returns:
        Sorted, disjoint (first, last) ranges, none inside the surrogate block.
    """
    codepoints, text = all_characters()
    ranges = []
    for match in regex.finditer(f"(?:{class_pattern})+", text, regex.IGNORECASE):
        first, last = codepoints[match.start()], codepoints[match.end() - 1]
        if first < SURROGATES.start and last >= SURROGATES.stop:  # a run across the gap
            ranges += [(first, SURROGATES.start - 1), (SURROGATES.stop, last)]
        else:
            ranges.append((first, last))
    return ranges


@functools.lru_cache(maxsize=1)
def all_characters() -> tuple[list[int], str]:
    """Every Unicode scalar value (surrogates excluded), as a list and as one string."""
    codepoints = [cp for cp in range(sys.maxunicode + 1) if cp not in SURROGATES]
    return codepoints, "".join(map(chr, codepoints))


def onig_class(ranges: list[tuple[int, int]]) -> str:
    """Oniguruma pattern for a set of code point ranges: `\\x{..}` or `[\\x{..}-\\x{..}...]`."""
    if not ranges:
        raise ValueError("empty character class: the `regex` module matched no code point for it")
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return f"\\x{{{ranges[0][0]:X}}}"
    items = (f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return "[" + "".join(items) + "]"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table, in CLIP's vocabulary order.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to chr(256 + n) in byte
    order, so that no BPE symbol is whitespace or a control character.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [byte for byte in range(256) if byte not in printable]
    table = {byte: chr(byte) for byte in printable}
    table.update({byte: chr(256 + n) for n, byte in enumerate(others)})
    return table
