"""The trainer: bitwise resume, the pickle-free state file, Ctrl-C, the feature cache, batch
sampling, and tr2m-train end to end on a folder dataset made from the real NYU samples."""
from __future__ import annotations

import copy
import csv
import os
import signal
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file

import tr2m
from tr2m.training.cli import main as train_cli
from tr2m.training.sampling import MixedBatchSampler
from tr2m.training.state import STATE_FILE, load_training_state
from tr2m.training.synthetic import SyntheticScenes
from tr2m.training.trainer import LOG_FIELDS, TrainConfig, Trainer

NYU_FRAMES = ["00000", "00050", "00100"]


def _fit(base, out: Path, max_steps=None, *, scenes=5, **overrides):
    """Train a copy of `base` on synthetic scenes (5 at batch 2: 3 steps per epoch)."""
    model = copy.deepcopy(base)
    options = dict(preset="tiny", out_dir=str(out), epochs=2, batch_size=2, lr=1e-3, max_steps=max_steps,
                   num_workers=0, device="cpu", pretrained=False, progress=False, log_every=1,
                   contrast_warmup_steps=2)
    trainer = Trainer(TrainConfig(**{**options, **overrides}), model=model,
                      datasets=[SyntheticScenes(scenes, model.config.input_size)])
    return trainer, trainer.fit()


def _log(path: Path):
    with open(path / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_resume_equals_uninterrupted_run_bitwise(tiny_model, tmp_path):
    # The first run stops mid-epoch 0; the resumed one crosses the epoch boundary (LR decay).
    first, result = _fit(tiny_model, tmp_path / "a", max_steps=2)
    assert (result.step, result.epoch, result.interrupted) == (2, 0, False)
    _check_state_file(tmp_path / "a", first, tiny_model)
    resumed, result = _fit(tiny_model, tmp_path / "a", max_steps=4, resume=str(tmp_path / "a"))
    straight, _ = _fit(tiny_model, tmp_path / "b", max_steps=4)
    assert (result.step, result.epoch) == (4, 1)
    for name in (STATE_FILE, "final.safetensors"):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs"
    assert resumed.scheduler.state_dict() == straight.scheduler.state_dict()
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.9, rel=1e-12)
    rows_a, rows_b = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert [r["step"] for r in rows_a] == ["1", "2", "3", "4"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows_a]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows_b]


def _check_state_file(run: Path, trainer: Trainer, initial_model) -> None:
    """The state is a plain safetensors file (nothing to unpickle) holding what resume needs."""
    with safe_open(str(run / STATE_FILE), framework="pt") as f:
        assert f.metadata()["format"] == "tr2m-train-state"
        keys = list(f.keys())
    assert any(k.startswith("optimizer.") and k.endswith(".exp_avg_sq") for k in keys)
    assert any(k.startswith("ema.") for k in keys) and any(k.startswith("head.") for k in keys)
    state = load_training_state(run)
    expected = trainer.optimizer.state_dict()
    assert state.optimizer["param_groups"] == expected["param_groups"]
    for index, entries in expected["state"].items():
        for name, value in entries.items():
            assert torch.equal(state.optimizer["state"][index][name], value)
    assert state.counters == {"epoch": 0, "step": 2, "step_in_epoch": 2}
    ema = trainer.ema.state_dict()
    assert all(torch.equal(state.ema[k], ema[k]) for k in ema)
    # The EMA key head lags the online head (momentum 0.99) but has moved off the initial weights.
    online, initial = trainer.head.state_dict(), initial_model.head.state_dict()
    moved = [k for k in ema if not torch.equal(ema[k], initial[k])]
    assert moved and all(not torch.equal(ema[k], online[k]) for k in moved)


def test_ctrl_c_saves_a_resumable_checkpoint_and_exits_130(tmp_path, monkeypatch):
    original = Trainer.train_step

    def step_then_interrupt(self, batch):
        parts = original(self, batch)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # handled between steps: nothing half-written
        return parts

    monkeypatch.setattr(Trainer, "train_step", step_then_interrupt)
    out = tmp_path / "run"
    result = CliRunner().invoke(train_cli, [
        "--preset", "tiny", "--random-init", "--synthetic", "12", "--out", str(out), "--batch-size", "2",
        "--lr", "1e-3", "--num-workers", "0", "--device", "cpu", "--no-progress",
    ])
    assert result.exit_code == 130, result.output
    assert "interrupted at step 2" in result.output
    assert load_training_state(out).counters["step"] == 2
    assert (out / "last.safetensors").is_file() and not (out / "final.pth").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_feature_cache_reuse_reproduces_the_run(tiny_model, tmp_path):
    cache = tmp_path / "cache"
    _fit(tiny_model, tmp_path / "a", epochs=1, cache_dir=str(cache))
    files = sorted(p.name for p in cache.rglob("*.safetensors"))
    assert len(files) == 5  # one per scene (and the flip it drew)
    _fit(tiny_model, tmp_path / "b", epochs=1, cache_dir=str(cache))  # every lookup hits now
    assert sorted(p.name for p in cache.rglob("*.safetensors")) == files
    a, b = load_file(str(tmp_path / "a" / "final.safetensors")), load_file(str(tmp_path / "b" / "final.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mixed_batch_sampler_shards_and_never_mixes_datasets():
    sizes = [5, 3]
    seen = []
    counts = set()
    for rank in range(2):
        sampler = MixedBatchSampler(sizes, 2, seed=1, rank=rank, world_size=2)
        sampler.set_epoch(3)
        batches = list(sampler)
        counts.add(len(batches))
        assert len(batches) == len(sampler)
        for batch in batches:
            assert all(epoch == 3 for epoch, _ in batch)
            assert len({index < 5 for _, index in batch}) == 1  # one dataset per batch
            seen += [index for _, index in batch]
        sampler.set_epoch(3, start=1)
        assert list(sampler) == batches[1:]
        assert sampler.batches(4) != batches  # reshuffled each epoch
    assert len(counts) == 1  # every rank runs the same number of steps
    assert set(seen) == set(range(8))


def _nyu_folder(shared_data: Path, root: Path) -> Path:
    """A folder dataset (rgb/, depth/ in mm, captions/) linking the real NYU samples."""
    for sub in ("rgb", "depth", "captions"):
        (root / sub).mkdir(parents=True)
    for frame in NYU_FRAMES:
        (root / "rgb" / f"{frame}.jpg").symlink_to(shared_data / "metric3d_nyu" / "rgb" / f"rgb_{frame}.jpg")
        (root / "depth" / f"{frame}.png").symlink_to(shared_data / "metric3d_nyu" / "depth" / f"sync_depth_{frame}.png")
        (root / "captions" / f"{frame}.txt").write_text("a basement with a water heater\nstorage shelves\n")
    return root


def test_train_cli_on_real_nyu_frames_writes_reloadable_checkpoints(shared_data, tmp_path):
    root = _nyu_folder(shared_data, tmp_path / "nyu")
    out = tmp_path / "run"
    result = CliRunner().invoke(train_cli, [
        "--preset", "tiny", "--random-init", "--dataset", "folder", "--root", str(root), "--depth-scale", "1000",
        "--out", str(out), "--epochs", "2", "--batch-size", "2", "--lr", "1e-4", "--num-workers", "0",
        "--log-every", "1", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    assert "finished at step 4 (epoch 2)" in result.output
    rows = _log(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and list(rows[0]) == list(LOG_FIELDS)
    assert all(float(r["silog"]) > 0 and float(r["total"]) == float(r["total"]) for r in rows)
    trained = load_file(str(out / "final.safetensors"))
    model = tr2m.create_model(None, pretrained=False, checkpoint=out / "final.safetensors")
    assert model.config.name == "tiny"
    assert all(torch.equal(model.head.state_dict()[k], v) for k, v in trained.items())
    released = tr2m.create_model("tiny", pretrained=False, checkpoint=out / "final.pth")
    assert all(torch.equal(released.head.state_dict()[k], v) for k, v in trained.items())
    assert tr2m.create_model(None, pretrained=False, checkpoint=out / "last.safetensors").config.name == "tiny"
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in trained.items() if "scale2.2.weight" in k)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nyux", "--root", "."], "unknown dataset 'nyux'"),
    (["--dataset", "folder", "--root", "/no/such/folder", "--depth-scale", "1000"], "dataset folder /no/such/folder not found"),
    (["--synthetic", "4", "--checkpoint", "BAD"], "bad.pth"),
    (["--synthetic", "4", "--resume", "/no/such/run"], "no training state at /no/such/run"),
    ([], "no training data"),
])
def test_train_cli_bad_inputs_give_one_line_errors(tmp_path, args, message):
    args = [str(tmp_path / "bad.pth") if a == "BAD" else a for a in args]
    (tmp_path / "bad.pth").write_text("not a checkpoint")
    result = CliRunner().invoke(train_cli, ["--preset", "tiny", "--random-init", "--out", str(tmp_path / "o"),
                                            "--num-workers", "0", "--no-progress", *args])
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and message in result.output
    assert "Traceback" not in result.output
