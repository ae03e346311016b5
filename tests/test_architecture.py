"""The architecture picture (docs/architecture.svg) is what durable_course/architecture.py draws."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from durable_course import architecture

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_picture_is_what_the_code_draws():
    assert architecture.PICTURE == ROOT / "docs" / "architecture.svg"
    assert architecture.PICTURE.read_text() == architecture.svg(), \
        "docs/architecture.svg is out of date: run python -m durable_course.architecture"


def test_the_picture_is_the_same_on_every_run():
    # In a process of its own: no state shared with this one (ids, fonts, caches) can make it match.
    other = subprocess.run([sys.executable, "-c", "from durable_course.architecture import svg; print(svg(), end='')"],
                           capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert other == architecture.svg()
    assert not re.search(r"<dc:date>", other), "no date in the picture's metadata"


def test_check_says_when_the_picture_is_out_of_date(tmp_path, capsys):
    stale = tmp_path / "architecture.svg"
    stale.write_text("<svg/>")
    assert architecture.main(["--check", "--output", str(stale)]) == 1
    assert "out of date: run python -m durable_course.architecture" in capsys.readouterr().err
    assert architecture.main(["--output", str(stale)]) == 0 and stale.read_text() == architecture.svg()
    assert architecture.main(["--check", "--output", str(stale)]) == 0


def test_the_picture_names_every_part_and_is_shown_in_notebook_00_and_the_readme():
    labels = [text.get_text() for text in architecture.draw().axes[0].texts]
    for part in ("Client", "Temporal server", "Worker", "① Workflow: the agent loop", "② Activities: side effects",
                 "③ Event history (the state)", "Task queue"):
        assert part in labels, part
    assert "](docs/architecture.svg)" in (ROOT / "README.md").read_text()
    assert "](../docs/architecture.svg)" in (ROOT / "notebooks" / "00_welcome.ipynb").read_text()
