"""The examples a user copies run as written (small settings)."""
import runpy
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.slow
def test_compress_and_train_example(capsys):
    torch.set_num_threads(1)
    main = runpy.run_path(str(EXAMPLES / "compress_and_train.py"))["main"]
    acc = main(["--samples", "1500", "--epochs", "3"])
    out = capsys.readouterr().out
    assert "max rank" in out and "layout=interleaved" in out and "epoch  3" in out
    assert acc > 0.2  # chance is 0.1
