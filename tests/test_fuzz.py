"""Random and degenerate inputs (tests/fuzz_ops.py) cannot kill the process, hang, or get
a wrong result: every op on every backend here gives the reference's result or raises
ValueError (BackendError where a forced backend cannot run)."""
import os
import random
import subprocess
import sys
from pathlib import Path

from helpers import versions

HERE = Path(__file__).resolve().parent
CASES = 300


@versions
def test_fuzzed_inputs_get_the_reference_result_or_a_value_error(tmp_path):
    seed = random.randrange(2**31)  # fresh inputs every run; the seed reproduces them
    progress = tmp_path / "progress"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    try:
        result = subprocess.run([sys.executable, str(HERE / "fuzz_ops.py"), str(seed), str(CASES), str(progress)],
                                capture_output=True, text=True, timeout=600, env=env, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"hung at {progress.read_text().strip()}") from None
    last = progress.read_text().strip() if progress.exists() else f"seed {seed}: before the first case"
    assert result.returncode >= 0, f"killed by signal {-result.returncode} at {last}"
    assert result.returncode == 0, (f"seed {seed} (rerun: python tests/fuzz_ops.py {seed} {CASES} FILE):\n"
                                    + result.stdout[-4000:] + result.stderr[-4000:])


def test_the_fuzzer_sees_a_wrong_result():
    """A backend that returns a slightly wrong result, or raises TypeError, is a defect."""
    import fuzz_ops
    import torch

    def run(backend):
        x = torch.ones(2, 3)
        if backend == "cpu":
            raise TypeError("an unchecked argument")
        return x * 1.1 if backend == "triton" else x

    defects = fuzz_ops.check("case", ["reference", "triton", "cpu", None], run)
    assert [line.split(": ")[0] for line in defects] == ["case backend=triton", "case backend=cpu"]
    assert fuzz_ops.check("case", ["reference", "cpu"], lambda backend: (_ for _ in ()).throw(ValueError())) == []
