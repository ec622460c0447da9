"""README.md's "Python in 15 lines" runs as written (in a child process)."""
import re

from conftest import ROOT, run_child


def test_readme_python_in_15_lines(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python in 15 lines", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "no python block in the README section"
    code = m.group(1)
    assert len(code.strip().splitlines()) <= 15
    out = run_child(code, cwd=tmp_path)
    assert "'count': 301500" in out, out
