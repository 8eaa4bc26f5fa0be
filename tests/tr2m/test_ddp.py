"""Multi-process training through torchrun + DistributedDataParallel, on CPU (gloo)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from safetensors import safe_open
from safetensors.torch import load_file

WORKER = textwrap.dedent("""
    import os, sys
    from safetensors.torch import save_file
    from tr2m.training.synthetic import SyntheticScenes
    from tr2m.training.trainer import TrainConfig, build_model, train

    out = sys.argv[1]
    config = TrainConfig(preset="tiny", out_dir=out, epochs=2, batch_size=2, lr=1e-3, max_steps=3, num_workers=0,
                         device="cpu", pretrained=False, progress=False, log_every=1, contrast_warmup_steps=1)
    model = build_model(config)  # seeded: identical random encoders on both ranks
    result = train(config, datasets=[SyntheticScenes(10, model.config.input_size)], model=model)
    head = {k: v.contiguous() for k, v in model.head.state_dict().items()}
    info = {"world": os.environ["WORLD_SIZE"], "step": str(result.step)}
    save_file(head, os.path.join(out, "rank%s.safetensors" % os.environ["RANK"]), metadata=info)
""")


def test_torchrun_two_cpu_processes_keep_identical_heads(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        with safe_open(str(out / f"rank{rank}.safetensors"), framework="pt") as f:
            assert f.metadata() == {"world": "2", "step": "3"}
    rank0, rank1 = (load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # gradients were averaged
    final = load_file(str(out / "final.safetensors"))  # written by rank 0 only
    assert all(torch.equal(rank0[k], final[k]) for k in rank0)
    # The ranks saw different samples (DistributedSampler shards), yet training moved the head.
    last = rank0["output_conv_scale2.2.weight"]
    assert last.abs().sum() > 0  # starts at zero
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("step,epoch,lr,total")
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("rank")) == ["rank0.safetensors", "rank1.safetensors"]
