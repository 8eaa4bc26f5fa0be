"""runtime.tokenizer.ClipTokenizer gives exactly open_clip.tokenize's ids, without torch."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import BundleError, CaptionError
from runtime.tokenizer import ClipTokenizer, clean_caption

REPO_ROOT = Path(__file__).resolve().parents[2]
SOT, EOT = 49406, 49407

CAPTIONS = [
    # plain scene captions, as TR2M uses them
    "a photo of a cat",
    "A Photo Of A CAT",
    "an office",
    "a street at night",
    "An image with a table, chairs, a lamp and a bookshelf.",
    # HTML entities: ftfy unescapes once unless the text has a '<', then html.unescape twice
    "Tom &amp; Jerry",
    "Tom &amp;amp;amp; Jerry",
    "<i>Tom &amp;amp; Jerry</i>",
    "&lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;single&#39; &#x263A;",
    # accents, precomposed and decomposed (ftfy recomposes)
    "café naïve résumé über straße",
    "cafe\u0301 with a decomposed accent",
    # other scripts
    "東京タワーの夜景",
    "北京的一条街道",
    "서울의 거리 풍경",
    "Москва ночью",
    "ΟΔΟΣ ΣΤΗΝ ΑΘΗΝΑ",  # word-final capital sigma lowercases to ς
    "مكتب حديث",
    "שלום עולם",
    "हिंदी वाक्य",
    "ภาษาไทย",
    "İstanbul ıi Turkish dotted and dotless i",
    "ǅ titlecase digraph",
    "𝔉𝔯𝔞𝔨𝔱𝔲𝔯 mathematical letters",
    "𐍈 gothic letter",
    "ⓐⓑⓒ circled letters",
    "Ｈｅｌｌｏ ３ｄ fullwidth",
    # emoji, including ZWJ sequences, skin tones and flags
    "😀 a happy face 👍🏽 🇫🇷 👨‍👩‍👧",
    "🚗🚕🚙",
    "Photo📷of東京 at 5pm!!",
    # mojibake that ftfy repairs, ligatures, BOM, surrogates, control characters
    "Ã©tÃ© mojibake",
    "The Mona Lisa doesnâ€™t have eyebrows.",
    "â€œcurly quotesâ€\x9d",
    "ﬁne ﬂoor ligatures",
    "\ufeffbyte order mark first",
    "\ud83d\ude00 surrogate pair and a lone \ud800 one",
    "control\x00chars\x07here\x1b[31m",
    "private use \ue000 and kelvin \u212a",
    # contractions and punctuation
    "isn't it? we're here; they've gone, I'm ok, you'll see, he'd go",
    "ISN'T IT'S",
    "rock'n'roll o'clock",
    "'s",
    "!!!??? ... --- ***",
    "$100 + €20 = £?? #hashtag @user ~tilde~ `code` [brackets] {braces} (parens)",
    "e-mail: someone@example.com, url https://example.com/a?b=c&d=e",
    "snake_case and CamelCase and kebab-case",
    # numbers: split digit by digit
    "2 cats, 3.5 m, 10,000 people, 1999-12-31, 42%",
    "١٢٣ arabic digits, ²³ superscripts, ½ fraction, Ⅻ roman numeral",
    # whitespace
    "multiple    spaces   between words",
    "newlines\nand\r\ntabs\there",
    "\t\n  leading and trailing whitespace \n\t ",
    "non\u00a0breaking\u2003em\u3000ideographic spaces",
    "zero\u200bwidth\u200djoiners",
    "",
    " ",
    "   \n\t  ",
    "a",
    ".",
    # the special tokens spelled out in a caption, and case-folding corner cases
    "<start_of_text>",
    "a photo <end_of_text> of a cat",
    "!!<start_of_text> punctuation before a special token",
    "<START_OF_TEXT>uppercase special",
    "<ſtart_of_text> with a long s",
    "<\ufb06art_of_text> with a ligature",
    "'ſt old spelling",
    "a\u0345b combining ypogegrammeni",
    # truncation: 75 tokens fit exactly, 76 do not
    "a " * 75,
    "a " * 76,
    "word " * 100,
    "x" * 300,
    "long caption: " + " ".join(f"object{i}" for i in range(120)),
    ("a living room with a sofa, a television and a window. " * 200)[:10_000],
]


@pytest.fixture(scope="module")
def open_clip_tokenize():
    """open_clip.tokenize as a numpy function: the reference."""
    open_clip = pytest.importorskip("open_clip")
    return lambda texts, context_length=77: open_clip.tokenize(texts, context_length).numpy()


def test_captions_cover_what_the_parity_test_promises():
    assert len(CAPTIONS) >= 60
    assert max(len(caption) for caption in CAPTIONS) == 10_000


@pytest.mark.parametrize("caption", CAPTIONS, ids=[f"caption{i}" for i in range(len(CAPTIONS))])
def test_each_caption_matches_open_clip(clip_tokenizer, open_clip_tokenize, caption):
    np.testing.assert_array_equal(clip_tokenizer(caption), open_clip_tokenize(caption))


def test_batch_matches_open_clip(clip_tokenizer, open_clip_tokenize):
    np.testing.assert_array_equal(clip_tokenizer(CAPTIONS), open_clip_tokenize(CAPTIONS))


def test_random_unicode_captions_match_open_clip(clip_tokenizer, open_clip_tokenize):
    captions = random_captions(random.Random(0), count=300)
    np.testing.assert_array_equal(clip_tokenizer(captions), open_clip_tokenize(captions))


def test_shorter_context_length_matches_open_clip(clip_tokenizer_file, open_clip_tokenize):
    tokenizer = ClipTokenizer.from_file(clip_tokenizer_file, context_length=8)
    captions = ["a photo of a cat", "a photo of a cat on a sofa", "", "<end_of_text> " * 9]
    np.testing.assert_array_equal(tokenizer(captions), open_clip_tokenize(captions, 8))


def test_pinned_ids_of_a_photo_of_a_cat(clip_tokenizer):
    expected = np.zeros((1, 77), dtype=np.int64)
    expected[0, :7] = [49406, 320, 1125, 539, 320, 2368, 49407]
    np.testing.assert_array_equal(clip_tokenizer("a photo of a cat"), expected)


def test_long_caption_is_cut_with_eot_in_the_last_position(clip_tokenizer):
    ids = clip_tokenizer("word " * 100)[0]
    assert ids[0] == SOT and ids[76] == EOT
    assert np.all(ids[1:76] == ids[1]) and ids[1] not in (0, SOT, EOT)


def test_exactly_75_tokens_fit_without_cutting(clip_tokenizer):
    ids = clip_tokenizer("a " * 75)[0]
    assert ids[0] == SOT and ids[76] == EOT and np.all(ids[1:76] == 320)


def test_empty_and_blank_captions_are_sot_eot_then_padding(clip_tokenizer):
    expected = np.zeros((2, 77), dtype=np.int64)
    expected[:, :2] = [SOT, EOT]
    np.testing.assert_array_equal(clip_tokenizer(["", " \n\t "]), expected)


def test_attributes(clip_tokenizer):
    assert (clip_tokenizer.context_length, clip_tokenizer.sot_token_id) == (77, SOT)
    assert clip_tokenizer.eot_token_id == EOT


@pytest.mark.parametrize(
    ("texts", "shape"),
    [("one caption", (1, 77)), (["a", "b", "c"], (3, 77)), (("a", "b"), (2, 77)), ([], (0, 77))],
)
def test_output_shape_and_dtype(clip_tokenizer, texts, shape):
    ids = clip_tokenizer(texts)
    assert ids.shape == shape and ids.dtype == np.int64


def test_clean_caption_applies_ftfy_html_whitespace_and_lowercase():
    raw = "  Tom &amp;amp;amp;\n\tJERRY  Ã©tÃ©  ΟΔΟΣ "
    assert clean_caption(raw) == "tom & jerry été οδος"
    assert clean_caption("<i>&amp;amp;</i>") == "<i>&</i>"


@pytest.mark.parametrize("texts", [[1], [b"bytes"], b"bytes", 5, ["ok", None]])
def test_non_string_captions_are_refused(clip_tokenizer, texts):
    with pytest.raises(CaptionError, match="caption"):
        clip_tokenizer(texts)


def test_missing_file_names_the_builder(tmp_path):
    with pytest.raises(BundleError, match="build_clip_tokenizer"):
        ClipTokenizer.from_file(tmp_path / "tokenizer.json")


def test_a_tokenizer_without_clip_special_tokens_is_refused(clip_tokenizer_file, tmp_path):
    content = json.loads(clip_tokenizer_file.read_text(encoding="utf-8"))
    del content["model"]["vocab"]["<end_of_text>"]
    other = tmp_path / "tokenizer.json"
    other.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(BundleError, match="<end_of_text>"):
        ClipTokenizer.from_file(other)


def test_context_length_below_two_is_refused(clip_tokenizer_file):
    with pytest.raises(ValueError, match="context_length"):
        ClipTokenizer.from_file(clip_tokenizer_file, context_length=1)


def test_runtime_tokenizer_never_imports_torch(clip_tokenizer_file):
    script = textwrap.dedent(
        f"""
        import sys
        from runtime.tokenizer import ClipTokenizer
        ids = ClipTokenizer.from_file({str(clip_tokenizer_file)!r})(["a photo of a cat"])
        assert ids[0, 5] == 2368, ids
        loaded = [name for name in ("torch", "open_clip", "export", "tr2m") if name in sys.modules]
        assert not loaded, loaded
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def random_captions(rng: random.Random, *, count: int) -> list[str]:
    """Captions of random words from several Unicode pools, joined by random whitespace."""
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        "'!?.,;:-_&<>/()[]#%@\"",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœŒ",
        "αβγδεζηθικλμνξοπρσςτυφχψωΣΩ",
        "东京北京上海街道房间桌子椅子窗户",
        "😀👍🏽🇫🇷🚗🌃🏠\u200d",
        "&amp;&lt;&gt;&quot;",
    ]
    whitespace = [" ", "  ", "\n", "\t", "\u00a0"]
    captions = []
    for _ in range(count):
        words = [
            "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 9)))
            for _ in range(rng.randint(0, 40))
        ]
        captions.append("".join(word + rng.choice(whitespace) for word in words))
    return captions
