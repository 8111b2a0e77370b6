"""A fresh clone has nothing beside it: no tracked file reads, runs or links anything outside the
repo's own tree (a path that climbs out with `..`, a Python path computed past the repo root, or
a folder that only exists on the machines the project is developed on)."""

import re
import subprocess
from pathlib import Path

import pytest

from nativestack.paths import REPO

# Runs of `..` segments (`..`, `../..`), not `...` or `a..b`.
CLIMB = re.compile(r"(?<![\w.])\.\.(?:/\.\.)*(?![\w.])")
# Path(__file__).resolve().parents[N] / .parent.parent...: N + 1 folders up from the file.
PARENTS_INDEX = re.compile(r"Path\(__file__\)\.resolve\(\)\.parents\[(\d+)\]")
PARENT_CHAIN = re.compile(r"Path\(__file__\)\.resolve\(\)((?:\.parent)+)")
# Names of what lies outside: the repo root's parent, and the development machines' folders.
OUTSIDE = re.compile(r"\b(?:REPO|REPO_ROOT|ROOT)\.parent\b|\$(?:REPO_ROOT|root)/\.\.|/work/|\bshared/schemas\b")


def tracked_text_files() -> list[Path]:
    if not (REPO / ".git").exists():
        pytest.fail("the repo's .git is needed to list the tracked files")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = []
    for name in names.decode().split("\0"):
        path = REPO / name
        if name and path.is_file() and path.stat().st_size < 1_000_000 and b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def escapes(path: Path, text: str) -> list[str]:
    """What in `text` (the content of `path`) points outside the repo."""
    depth = len(path.relative_to(REPO).parts) - 1  # folders between the repo root and the file
    found = [f"`{m[0]}` from {depth} folders deep" for m in CLIMB.finditer(text) if m[0].count("..") > depth]
    found += [f"parents[{n}]" for n in map(int, PARENTS_INDEX.findall(text)) if n > depth]
    found += [
        f"{chain} ({chain.count('.parent')} up)"
        for chain in PARENT_CHAIN.findall(text)
        if chain.count(".parent") > depth + 1
    ]
    return found + [m[0] for m in OUTSIDE.finditer(text)]


def test_no_tracked_file_reads_outside_the_repo() -> None:
    this = Path(__file__).resolve()
    offenders = {}
    for path in tracked_text_files():
        if path == this:  # names the patterns it looks for
            continue
        found = escapes(path, path.read_text(errors="replace"))
        if found:
            offenders[str(path.relative_to(REPO))] = found
    assert offenders == {}


def test_the_check_sees_each_way_out() -> None:
    """The detector itself, on a file two folders deep (its folder's parent is the repo root)."""
    where = REPO / "native" / "nativestack" / "x.py"
    assert escapes(where, 'REPO = Path(__file__).resolve().parents[2]\nsee "../README.md" and ../../.env') == []
    assert escapes(where, 'Path(__file__).resolve().parent.parent.parent / "x"') == []
    for outside in (
        "schema = REPO.parent / 'shared' / 'x.json'",
        'open("../../../shared/x")',
        "Path(__file__).resolve().parents[3]",
        "Path(__file__).resolve().parent.parent.parent.parent",
        'cd "$root/.." && ls',
        "/work/shared/notes",
    ):
        assert escapes(where, outside), outside
