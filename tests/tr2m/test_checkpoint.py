import pickle

import pytest
import torch

from tr2m import CheckpointError, create_model, load_head, read_checkpoint, save_checkpoint, save_released_format
from tr2m.config import get_preset
from tr2m.head import ScaleMapModel


@pytest.fixture(scope="module")
def released_state():
    torch.manual_seed(1)
    return ScaleMapModel(get_preset("paper").head).state_dict()


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd},
    lambda sd: dict(sd),
    lambda sd: {"model": {f"scalemap.{k}": v for k, v in sd.items()} | {"contrast.queue": torch.zeros(3)}},
    lambda sd: {"model": {f"module.scalemap.{k}": v for k, v in sd.items()}},
], ids=["released", "raw", "training", "ddp-training"])
def test_released_keys_load_strictly_in_every_wrapping(tmp_path, released_state, wrap):
    path = tmp_path / "head.pth"
    torch.save(wrap(released_state), path)
    head = ScaleMapModel(get_preset("paper").head)
    load_head(head, path)
    for key, value in released_state.items():
        assert torch.equal(head.state_dict()[key], value), key


def test_wrong_checkpoint_names_keys_and_shapes(tmp_path, released_state):
    state = dict(released_state)
    state.pop("layer1_rn.weight")
    state["projects.weight"] = torch.zeros(10, 1024, 1, 1)
    state["extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_head(ScaleMapModel(get_preset("paper").head), tmp_path / "bad.pth")
    message = str(err.value)
    assert "missing: layer1_rn.weight" in message
    assert "unexpected: extra.weight" in message
    assert "projects.weight [10, 1024, 1, 1] vs model [192, 1024, 1, 1]" in message


class _RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": _RunsCode()}))
    with pytest.raises(CheckpointError, match="refuse to unpickle"):
        read_checkpoint(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_garbage_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "absent.pth")


def test_our_safetensors_checkpoint_rebuilds_the_model_alone(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model.head, tiny_model.config, tmp_path / "head.safetensors")
    rebuilt = create_model(None, checkpoint=path, pretrained=False)
    assert rebuilt.config == tiny_model.config
    for key, value in tiny_model.head.state_dict().items():
        assert torch.equal(rebuilt.head.state_dict()[key], value)


def test_released_format_export_reads_back(tmp_path, tiny_model):
    path = save_released_format(tiny_model.head, tmp_path / "head.pth")
    assert set(torch.load(path, weights_only=True)) == {"state_dict"}
    state, config = read_checkpoint(path)
    assert config is None and state.keys() == tiny_model.head.state_dict().keys()
