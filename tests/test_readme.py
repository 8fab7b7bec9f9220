"""The README's code example runs as written (with fewer outer steps)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert "outer_steps=300" in code
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code.replace("outer_steps=300", "outer_steps=5"), "README.md", "exec"), scope)
    assert len(scope["trainer"].history) == 5
    assert (tmp_path / "runs" / "wd" / "ckpt.pt").exists()
