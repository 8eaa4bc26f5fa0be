"""The two captioning models, loaded by hub id or local folder through transformers' own classes.

`Describer`: any image-text-to-text model transformers runs natively (AutoModelForImageTextToText,
e.g. LLaVA-NeXT; never trust_remote_code), generating with transformers' `generate`.
`ObjectLister`: a panoptic segmentation model (AutoModelForUniversalSegmentation, e.g. Mask2Former
COCO panoptic), whose segments give class names and instance counts.
Both run batched, on the GPU when there is one (float16 there, float32 on the CPU).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from .prompts import DescribePrompt

# The LLaVA v1.6 release closest to the authors' captions (they used the v1.6 Vicuna and Mistral
# 7B models; the "The image shows ..." openings of their lines are the Mistral variant's habit).
DEFAULT_DESCRIBER = "llava-hf/llava-v1.6-mistral-7b-hf"
# COCO panoptic, the label set the released object lists come from ("pavement", "fire", "sky").
DEFAULT_LISTER = "facebook/mask2former-swin-large-coco-panoptic"
COCO_PANOPTIC_THINGS = 80  # COCO panoptic's 133 labels: 80 thing classes first, then 53 stuff classes


class CaptionModelError(RuntimeError):
    """A captioning model cannot be loaded or run (message says what to do)."""


@dataclass(frozen=True)
class Sampling:
    """Generation settings, recorded beside the captions. LLaVA's own CLI samples at temperature
    0.2; the released files repeat sentences within a file, which fits such a low temperature."""

    temperature: float = 0.2
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise ValueError(f"invalid sampling settings {asdict(self)}")


def pick_device(device: Optional[str] = None) -> str:
    """`device`, else "cuda" when a GPU is visible, else "cpu"."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _load(kind: str, model_id: str, load):
    try:
        return load()
    except ImportError as e:
        raise CaptionModelError(f"{kind} {model_id!r} needs a package that is missing ({e}); "
                                "install the torch extra: pip install 'tr2m[torch]'") from None
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptionModelError(f"cannot load {kind} {model_id!r}: {first} (give a hub id, or a local folder "
                                "saved with save_pretrained when offline)") from None


def _pil(rgb: np.ndarray):
    from PIL import Image

    if rgb.dtype != np.uint8:  # 16-bit frames: keep the top byte
        rgb = (rgb >> 8).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(rgb[..., :3]))


class Describer:
    """Scene descriptions from a vision-language model: `describe(images, prompt, seed)`."""

    def __init__(self, model_id: str = DEFAULT_DESCRIBER, device: Optional[str] = None,
                 sampling: Sampling = Sampling()) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model_id, self.device, self.sampling = model_id, pick_device(device), sampling
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.processor = _load("vision-language model", model_id, lambda: AutoProcessor.from_pretrained(model_id))
        self.model = _load("vision-language model", model_id, lambda: AutoModelForImageTextToText.from_pretrained(
            model_id, dtype=dtype).to(self.device).eval())
        self.processor.tokenizer.padding_side = "left"  # batched generation appends on the right

    def chat_prompt(self, instruction: str) -> str:
        """The model's own chat template around one image and `instruction`."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        try:
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except ValueError as e:
            raise CaptionModelError(f"{self.model_id!r} has no chat template ({e}); use an instruction-tuned "
                                    "image-text-to-text model") from None

    def describe(self, images: Sequence[np.ndarray], prompt: DescribePrompt, seed: int) -> List[List[str]]:
        """RGB uint8 [H,W,3] images -> per image, `prompt.samples` raw generated texts."""
        import torch

        text = self.chat_prompt(prompt.text)
        inputs = self.processor(images=[_pil(im) for im in images], text=[text] * len(images), padding=True,
                                return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        tokenizer = self.processor.tokenizer
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=True, temperature=self.sampling.temperature,
                                      top_p=self.sampling.top_p, max_new_tokens=self.sampling.max_new_tokens,
                                      num_return_sequences=prompt.samples,
                                      pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        texts = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        k = prompt.samples  # generate returns each input's samples next to each other
        return [texts[i * k:(i + 1) * k] for i in range(len(images))]


def clean_label(label: str) -> str:
    """A dataset label as a noun: 'sky-other-merged' -> 'sky', 'building, edifice' -> 'building'."""
    return label.split(",")[0].split("-")[0].replace("_", " ").strip().lower()


def stuff_labels(id2label: Dict[int, str]) -> Set[int]:
    """Label ids that are amorphous stuff (counted once, never 'two skies'). COCO panoptic's label
    order is known (things first); for other label sets every class is counted per segment."""
    if len(id2label) == 133 and id2label.get(0) == "person":
        return set(range(COCO_PANOPTIC_THINGS, 133))
    return set()


class ObjectLister:
    """Class names with instance counts from a panoptic segmentation model: `count(images)`."""

    def __init__(self, model_id: str = DEFAULT_LISTER, device: Optional[str] = None, threshold: float = 0.8) -> None:
        from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

        self.model_id, self.device, self.threshold = model_id, pick_device(device), threshold
        self.processor = _load("segmentation model", model_id, lambda: AutoImageProcessor.from_pretrained(model_id))
        self.model = _load("segmentation model", model_id, lambda: AutoModelForUniversalSegmentation.from_pretrained(
            model_id).to(self.device).eval())
        if not hasattr(self.processor, "post_process_panoptic_segmentation"):
            raise CaptionModelError(f"{model_id!r} is not a panoptic segmentation model (its processor has no "
                                    "post_process_panoptic_segmentation); try " + DEFAULT_LISTER)
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        self.stuff = stuff_labels(self.id2label)

    def count(self, images: Sequence[np.ndarray]) -> List[List[Tuple[str, int]]]:
        """RGB uint8 [H,W,3] images -> per image [(name, count), ...] in first-seen order (never empty:
        with no segment above the threshold, the single most confident class)."""
        import torch

        inputs = self.processor(images=[_pil(im) for im in images], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        # Masks at the model's own resolution: counting needs no full-size masks.
        results = self.processor.post_process_panoptic_segmentation(outputs, threshold=self.threshold,
                                                                    label_ids_to_fuse=self.stuff)
        logits = getattr(outputs, "class_queries_logits", None)
        logits = outputs.logits if logits is None else logits
        return [self._names(r["segments_info"], logits[i]) for i, r in enumerate(results)]

    def _names(self, segments: List[dict], logits) -> List[Tuple[str, int]]:
        counts: Counter = Counter()
        for seg in segments:
            label = int(seg["label_id"])
            name = clean_label(self.id2label[label])
            counts[name] = 1 if label in self.stuff else counts[name] + 1
        if not counts:
            probs = logits.float().softmax(-1)[:, :-1]  # last column: "no object"
            counts[clean_label(self.id2label[int(probs.max(0).values.argmax())])] = 1
        return list(counts.items())
