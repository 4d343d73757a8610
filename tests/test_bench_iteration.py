"""``bench/iteration.py --quick`` runs and prints its table (a smoke test: no timing is checked)."""

import subprocess
import sys

from tests.conftest import ROOT


def test_quick_iteration_benchmark_prints_the_table(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "iteration.py"), "--quick", "--configs", "descriptor", "coopnets"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| method, size (recipe) | plain s/iter |")
    body = rows[2:]
    assert [row.split(" | ")[0] for row in body] == ["| GenerativeConvNet (tiny)", "| CoopNets (tiny)"]
    for row in body:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(float(c) > 0 for c in cells[1:4])  # plain s/iter and the two ratios
        gradient_diff = float(cells[5].split(" / ")[0])
        assert gradient_diff < 1e-3  # the plain loop replays the framework's first iteration
    assert not list(tmp_path.iterdir())  # the fits wrote into a temporary folder of their own
