"""runtime.output_folder: which outputs a folder holds, and its creation."""
from __future__ import annotations

import pytest

from runtime.errors import OutputError
from runtime.output_folder import Outputs


def test_outputs_are_validated_and_an_unusable_folder_is_one_error(tmp_path):
    with pytest.raises(OutputError, match="no output selected"):
        Outputs(folder=tmp_path, video=False)
    with pytest.raises(OutputError, match="field of view"):
        Outputs(folder=tmp_path, ply=True)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create the output folder"):
        Outputs(folder=blocker / "out").prepare()


def test_remove_created_takes_away_only_what_prepare_made(tmp_path):
    (tmp_path / "kept").mkdir()
    outputs = Outputs(folder=tmp_path / "kept" / "a" / "b", png16=True)
    outputs.prepare()
    assert (tmp_path / "kept" / "a" / "b").is_dir()
    outputs.remove_created()
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"] and not list((tmp_path / "kept").iterdir())
