"""The README's examples run as printed: each python block followed by "prints" and a text block
must print exactly that text.  Its links lead to files of the repository (and of the sdist),
nothing outside it."""
import contextlib
import io
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
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


#: A Markdown link or image, [text](target) or ![alt](target): its target.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def test_readme_links_resolve_inside_the_repository():
    """A reader of the README on a package index or in an unpacked sdist has the repository's
    files and nothing else: every link is a relative path to an existing file or directory
    within it (not a URL, not ../shared/ beside a developer's clone)."""
    targets = LINK.findall(README.read_text())
    assert "docs/index.rst" in targets and "LICENSE" in targets
    for target in targets:
        assert "://" not in target and not target.startswith(("mailto:", "/")), target
        path = (ROOT / target.partition("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), target


def test_readme_names_no_file_outside_the_repository():
    text = README.read_text()
    for outside in ("SPEC.md", "shared/", "../"):
        assert outside not in text, outside
