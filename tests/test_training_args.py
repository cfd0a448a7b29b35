"""clipcap/training_args.py: the self-critical stage's arguments are checked, and the Hub token reaches no file and
no log (the arguments are pickled without tokens: docs/reliability.md)."""

import pytest
import torch

import run_train
from tests.conftest import train_argv


def test_scst_arguments_are_checked():
    from clipcap.training_args import SCSTArguments

    with pytest.raises(ValueError, match="needs at least 2 samples"):
        SCSTArguments(scst=True, scst_num_samples=1)
    with pytest.raises(ValueError, match="scst_baseline='best'"):
        SCSTArguments(scst=True, scst_baseline="best")
    with pytest.raises(ValueError, match="needs a reward"):
        SCSTArguments(scst=True, scst_clip_weight=0.0)
    assert SCSTArguments(scst=True, scst_num_samples=1, scst_baseline="greedy").scst_num_samples == 1


def test_the_hub_token_reaches_no_file_and_no_log(tmp_path, data_dir, capfd):
    secret = "hf_NotARealTokenButSecret0123456789"
    output_dir = tmp_path / "run"
    argv = train_argv(data_dir, output_dir, steps=2, save_steps=1, hub_token=secret, report_to="none")
    assert run_train.main(argv) == 0
    captured = capfd.readouterr()
    assert secret not in captured.out and secret not in captured.err
    files = [path for path in output_dir.rglob("*") if path.is_file()]
    assert any(path.name == "training_args.bin" for path in files) and any(p.name == "README.md" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    arguments = torch.load(output_dir / "training_args.bin", weights_only=False)
    assert arguments.hub_token is None and arguments.learning_rate == 1e-3  # the rest is kept
