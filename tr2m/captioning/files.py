"""Caption files for datasets: 15 lines per image in the loaders' layout, written atomically and
resumably, with the run's settings in a JSON beside them.

Which file belongs to which image is the dataset registry's answer (`tr2m.data.DATASETS`: NYU,
KITTI, VOID and C3VD mirror the image path under the captions root, the generic folder uses
captions/<stem>.txt), so the files land exactly where `tr2m-train` / `tr2m-eval` look.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..atomic import atomic_target
from .models import Describer, ObjectLister
from .prompts import DESCRIBE_PROMPTS, LINES_PER_FILE, OBJECT_LISTS
from .text import cap_tokens, clean_line, shuffled_sentences

SETTINGS_FILE = "tr2m-captions.json"


class CaptionSettingsError(ValueError):
    """The output folder holds captions made with other settings."""


@dataclass(frozen=True)
class Job:
    """One image to caption: its file and where its caption file goes."""

    image: Path
    caption_file: Path
    name: str


def dataset_jobs(name: str, root: str, split: Optional[str], out: str, depth_split: Optional[str] = None) -> List[Job]:
    """The images of a registry dataset and their caption files under `out`."""
    from ..data.datasets import DatasetConfig, build_dataset

    # depth_scale: the folder reader insists on one; depth is never read here.
    config = DatasetConfig(name=name, root=root, split=split, depth_split=depth_split, captions_root=out,
                           depth_scale=1.0)
    return [Job(item.image, item.caption_file, item.name) for item in build_dataset(config).items]


def is_complete(path: Path) -> bool:
    """A caption file with all its lines (a resumed run skips it)."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    return len(lines) == LINES_PER_FILE


def stable_seed(seed: int, *names: str) -> int:
    """A seed that depends only on the run seed and the image names (not on batching or order)."""
    return zlib.crc32(f"{seed}:{'|'.join(names)}".encode()) & 0x7FFFFFFF


def settings(describer: Describer, lister: ObjectLister, batch: int) -> Dict:
    """What makes a run reproducible: models, prompts, sampling, seed, thresholds, batch size."""
    import torch
    import transformers

    return {
        "describer": describer.model_id, "object_lister": lister.model_id,
        "prompts": [asdict(p) for p in DESCRIBE_PROMPTS], "object_lists": OBJECT_LISTS,
        "sampling": asdict(describer.sampling), "object_threshold": lister.threshold, "batch": batch,
        "lines": LINES_PER_FILE, "torch": torch.__version__, "transformers": transformers.__version__,
        "note": "descriptions are sampled per batch with seed crc32(seed, image names); a different batch "
                "size or device gives other (equally valid) samples",
    }


def write_settings(out: Path, run: Dict) -> None:
    """Record `run` in out/tr2m-captions.json; refuse a folder made with other settings."""
    path = out / SETTINGS_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        keys = [k for k in run if k not in ("torch", "transformers", "note") and old.get(k) != run[k]]
        if keys:
            raise CaptionSettingsError(f"{out} holds captions made with other settings ({', '.join(keys)} differ); "
                                       "use another --out, or the same settings to resume")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        tmp.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")


def caption_lines(describer: Describer, lister: ObjectLister, images: Sequence[np.ndarray], names: Sequence[str],
                  seed: int) -> Tuple[List[List[str]], int]:
    """Per image, the 15 cleaned lines (10 descriptions, 5 object lists); and how many descriptions
    came out empty and were replaced (by another sample, else the first object list)."""
    batch_seed = stable_seed(seed, *names)
    samples = [[] for _ in images]
    for k, prompt in enumerate(DESCRIBE_PROMPTS):
        for lines, texts in zip(samples, describer.describe(images, prompt, seed=batch_seed + k)):
            lines += [cap_tokens(t) if t else t for t in map(clean_line, texts)]
    objects = [shuffled_sentences(items, OBJECT_LISTS, np.random.default_rng(stable_seed(seed, name)))
               for items, name in zip(lister.count(images), names)]
    replaced = 0
    for lines, lists in zip(samples, objects):
        good = [ln for ln in lines if ln] or [lists[0]]
        replaced += sum(not ln for ln in lines)
        lines[:] = [ln or good[i % len(good)] for i, ln in enumerate(lines)] + lists
    return samples, replaced


def write_caption_file(path: Path, lines: Sequence[str]) -> None:
    """The caption file, whole or not at all."""
    if len(lines) != LINES_PER_FILE or any(not ln or "\n" in ln for ln in lines):
        raise ValueError(f"{path}: refusing to write {len(lines)} lines (need {LINES_PER_FILE} non-empty lines)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass
class Report:
    written: int = 0
    skipped: int = 0
    replaced: int = 0


def caption_jobs(jobs: Sequence[Job], describer: Describer, lister: ObjectLister, *, batch: int, seed: int,
                 read_image: Callable[[Path], np.ndarray], on_done: Callable[[int], None] = lambda n: None) -> Report:
    """Write every job's caption file, `batch` images per model call; complete files are skipped."""
    report = Report()
    todo = [job for job in jobs if not is_complete(job.caption_file)]
    report.skipped = len(jobs) - len(todo)
    on_done(report.skipped)
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        images = [read_image(job.image) for job in chunk]
        lines, replaced = caption_lines(describer, lister, images, [job.name for job in chunk], seed)
        for job, file_lines in zip(chunk, lines):
            write_caption_file(job.caption_file, file_lines)
        report.written += len(chunk)
        report.replaced += replaced
        on_done(len(chunk))
    return report
