"""Which samples each training step sees, reproducibly and across processes.

- `MixedBatchSampler`: batches never mix datasets (NYU 480x640 and KITTI 352x1216 GT cannot be
  stacked, and the loss runs at GT resolution). Each dataset is sharded over the ranks by torch's
  `DistributedSampler` (shuffled per epoch, padded to equal shares), cut into batches, and the
  batches of all datasets are interleaved in an order drawn from (seed, epoch), the same on every
  rank. Every rank therefore runs the same number of steps, as DDP requires. `start` skips the
  first batches of an epoch when a run resumes mid-epoch, without loading them.
- `EpochSamples`: a dataset indexed by (epoch, index). Each sample is read with torch's RNG seeded
  from (seed, epoch, index): the readers draw their augmentations and caption line from a generator
  seeded by `torch.initial_seed()`, so a sample's randomness does not depend on worker count, on
  the order of reads, or on whether the run was resumed.
"""
from __future__ import annotations

import bisect
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from .distributed import derive_seed

Key = Tuple[int, int]  # (epoch, flat index over the concatenated datasets)


class MixedBatchSampler(Sampler[List[Key]]):
    """Batches of (epoch, index) keys; one dataset per batch; this rank's share only.

    sizes: the length of each dataset (indices are offsets into their concatenation).
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every dataset needs at least one sample, got sizes {list(sizes)}")
        self.sizes = [int(n) for n in sizes]
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch to draw and how many of its batches to skip (resume)."""
        self.epoch, self.start = int(epoch), int(start)

    def batches(self, epoch: int) -> List[List[Key]]:
        """All of this rank's batches of `epoch`, in order."""
        batches: List[List[Key]] = []
        offset = 0
        for d, size in enumerate(self.sizes):
            shard = DistributedSampler(range(size), num_replicas=self.world_size, rank=self.rank,
                                       shuffle=self.shuffle, seed=derive_seed(self.seed, d) % (2 ** 31))
            shard.set_epoch(epoch)
            indices = [offset + i for i in shard]
            batches += [[(epoch, i) for i in indices[k:k + self.batch_size]]
                        for k in range(0, len(indices), self.batch_size)]
            offset += size
        if self.shuffle and len(self.sizes) > 1:
            order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))
            batches = [batches[i] for i in order.tolist()]
        return batches

    def __iter__(self) -> Iterator[List[Key]]:
        yield from self.batches(self.epoch)[self.start:]

    def __len__(self) -> int:
        per_rank = [-(-size // self.world_size) for size in self.sizes]
        return sum(-(-n // self.batch_size) for n in per_rank) - self.start


class EpochSamples(Dataset):
    """The concatenation of `datasets`, read by (epoch, index) keys with per-sample seeds.

    hflip: probability of flipping a sample here (used with the feature cache, where the readers'
    own augmentation is off: the flip is recorded in sample["flip"] so that the cached features of
    the flipped image are used). Every tensor with the image's spatial size is flipped with it.
    Samples gain "source" (which dataset) and "index" (the flat index).
    """

    def __init__(self, datasets: Sequence[Dataset], *, seed: int = 0, hflip: float = 0.0) -> None:
        self.datasets = list(datasets)
        self.seed = seed
        self.hflip = hflip
        self.ends: List[int] = []
        total = 0
        for ds in self.datasets:
            total += len(ds)
            self.ends.append(total)

    @property
    def sizes(self) -> List[int]:
        return [len(ds) for ds in self.datasets]

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def locate(self, index: int) -> Tuple[int, int]:
        """flat index -> (dataset number, index within it)."""
        d = bisect.bisect_right(self.ends, index)
        return d, index - (self.ends[d - 1] if d else 0)

    def __getitem__(self, key: Key) -> Dict[str, Any]:
        epoch, index = key
        d, local = self.locate(index)
        seed = derive_seed(self.seed, epoch, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the readers seed their augmentation RNG from torch.initial_seed()
            sample = dict(self.datasets[d][local])
        flip = self.hflip > 0 and torch.rand((), generator=torch.Generator().manual_seed(seed ^ 1)).item() < self.hflip
        if flip:
            sample = flip_sample(sample)
        sample["flip"] = torch.tensor(bool(flip))
        sample["source"] = d
        sample["index"] = index
        return sample


def flip_sample(sample: Dict[str, Any]) -> Dict[str, Any]:
    """Mirror every [C,H,W] tensor of the image's size left-right."""
    size = tuple(sample["image"].shape[-2:])
    return {k: v.flip(-1) if isinstance(v, torch.Tensor) and v.ndim == 3 and tuple(v.shape[-2:]) == size else v
            for k, v in sample.items()}
