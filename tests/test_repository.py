"""The repository stands on its own: no file cites a design document that is not in it (the facts
live in docs/method.md and in module docstrings), and the package data setup.cfg declares exists."""
from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A citation of the design document that lives outside the repository: its name followed by ".md",
# "section N" or ":". The examples below are assembled from parts so that this file itself is not
# one of the citations that grep-based checks look for.
DOC = "DESIGN"
OUTSIDE_DOCUMENT = re.compile(r"\bDESIGN(\.md\b|\s+section\b|\s*:)")
TEXT = (".py", ".md", ".cfg", ".txt", ".toml", ".json", ".yaml", ".yml", ".sh", "run")


def _tracked_text_files():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listed.stdout.splitlines() if name.endswith(TEXT) and (ROOT / name).is_file()]


def test_the_pattern_catches_the_citations_it_is_for():
    cited = [f"({DOC} section 4)", f"({DOC}.md section 2)", f"shapes, from {DOC}.md.", f"({DOC}: no torch)"]
    assert all(OUTSIDE_DOCUMENT.search(text) for text in cited)
    assert not OUTSIDE_DOCUMENT.search("DESIGNATED driver; class DesignNotes")


def test_no_file_cites_a_document_outside_the_repository():
    this = Path(__file__).resolve()
    hits = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for path in _tracked_text_files() if path.resolve() != this
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
            if OUTSIDE_DOCUMENT.search(line)]
    assert not hits, "state the fact (docs/method.md or the docstring) instead of citing it:\n" + "\n".join(hits)


def test_declared_package_data_exists():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    declared = config["options.package_data"] if config.has_section("options.package_data") else {}
    missing = [f"{package}: {pattern}" for package, patterns in declared.items() for pattern in patterns.split()
               if not list((ROOT / package.replace(".", "/")).glob(pattern))]
    assert not missing, f"setup.cfg declares package data that does not exist: {missing}"


def _readme_block(heading: str) -> str:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def test_the_readme_setup_and_test_commands_are_what_ci_runs():
    """CI installs exactly as the README says: each README command is a line of .ci/run."""
    ci_lines = {line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()}
    setup = [part.strip() for part in _readme_block("Set up").strip().split("&&")]
    tests = [_readme_block("Run the tests").strip()]
    missing = [command for command in setup + tests if command not in ci_lines]
    assert not missing, f"README commands .ci/run does not run: {missing}"
