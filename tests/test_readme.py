"""README's Python examples run as written, from a folder outside the checkout (the installed package only).

Blocks fenced ```python run here, all in one fresh process; ```python notest blocks (deblurring, training,
files a user brings) are only checked to compile."""

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python( notest)?\n(.*?)^```$", re.M | re.S)


def blocks(tested: bool) -> list[str]:
    return [code for notest, code in BLOCK.findall(README.read_text()) if bool(notest) != tested]


def test_readme_has_examples_of_both_kinds():
    assert len(blocks(tested=True)) >= 2 and len(blocks(tested=False)) >= 2


@pytest.mark.parametrize("index", range(len(blocks(tested=False))))
def test_notest_examples_compile(index):
    compile(blocks(tested=False)[index], f"README.md notest block {index}", "exec")


def test_examples_run_from_any_directory(tmp_path):
    code = "\n\n".join(blocks(tested=True))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
