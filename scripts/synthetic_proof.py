#!/usr/bin/env python
"""Prove that TR2M training learns: the tiny preset on synthetic scenes with known A and B maps.

The relative disparity of each scene is a known, spatially varying affine distortion of its true
inverse depth (rel = (1/d - B_true) / A_true, A_true from the caption and the image's red field,
B_true from the caption and the green field); the head sees only the frozen random encoders'
features of the image and the caption. See tr2m/training/synthetic.py.

    python scripts/synthetic_proof.py                 # a few minutes on 2 CPU cores
    python scripts/synthetic_proof.py --steps 30 --train-scenes 64 --test-scenes 16   # ~30 s

Prints AbsRel, delta1 and the correlations of the predicted A, B with the true maps before and
after training; --json writes them. Exits 1 if AbsRel was not at least halved.
"""
from __future__ import annotations

import sys

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--steps", type=int, default=600, show_default=True, help="Optimizer steps.")
@click.option("--train-scenes", type=int, default=512, show_default=True)
@click.option("--test-scenes", type=int, default=64, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
@click.option("--out", type=click.Path(), default=None, help="Keep the run folder (checkpoints, log.csv) here.")
@click.option("--json", "json_path", type=click.Path(), default=None, help="Write before/after numbers here.")
@click.option("--no-progress", is_flag=True)
def main(steps, train_scenes, test_scenes, batch_size, lr, seed, threads, out, json_path, no_progress) -> None:
    """Train the tiny preset on synthetic scenes and score it before and after."""
    import torch

    from tr2m.evaluation.evaluate import write_json
    from tr2m.training.synthetic import ProofConfig, run_proof

    if threads:
        torch.set_num_threads(threads)
    config = ProofConfig(train_scenes=train_scenes, test_scenes=test_scenes, steps=steps, batch_size=batch_size,
                         lr=lr, seed=seed, out_dir=out, progress=not no_progress)
    result = run_proof(config)
    click.echo(result.summary())
    if json_path:
        write_json(json_path, result.to_dict())
    if not result.after["abs_rel"] <= 0.5 * result.before["abs_rel"]:
        click.echo("FAILED: AbsRel was not halved", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
