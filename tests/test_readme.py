"""The README's examples run as printed: each python block followed by "prints" and a text block
must print exactly that text."""
import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE = re.compile(r"```python\n(?P<code>.*?)```\s*\nprints\s*\n\s*```text\n(?P<output>.*?)```", re.S)


def examples():
    return [(m["code"], m["output"]) for m in EXAMPLE.finditer(README.read_text())]


def test_readme_has_examples():
    """The examples below would silently vanish if the README's format changed."""
    assert len(examples()) >= 2


@pytest.mark.parametrize("code, output", examples())
def test_readme_example_prints_what_it_says(code, output):
    if "import torch" in code:
        pytest.importorskip("torch", reason="the PyTorch example needs torch: pip install "
                                            "\"fastdropout[torch]\"")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert printed.getvalue() == output


def test_ci_runs_the_readme_test_command():
    """CI must run what the README tells a newcomer to paste."""
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(), re.S)
    test_command = next(c for c in commands if "pytest" in c)
    ci_script = (README.parent / ".ci" / "run").read_text()
    assert test_command in ci_script.splitlines()
