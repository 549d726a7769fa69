"""Resuming a run from its checkpoint, and bad checkpoint files, through the graphmem command."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from graphmem.cli import main
from graphmem.lit.checkpoint import CheckpointError, check_checkpoint

KARATE = Path(__file__).resolve().parent.parent / "recipes" / "karate_gat.yaml"
EPOCHS, INTERRUPT = 12, 5


def _fit(run_dir: Path, epochs: int, *extra: str):
    """The karate recipe (dropout 0.2, so the random state matters) for ``epochs`` epochs."""
    return main(["fit", "--config", str(KARATE), "--trainer.max_epochs", str(epochs),
                 "--trainer.default_root_dir", str(run_dir),
                 "--trainer.logger.init_args.save_dir", str(run_dir), *extra])


def _checkpoint(run_dir: Path) -> Path:
    (path,) = run_dir.rglob("*.ckpt")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    """An uninterrupted run, and the same run stopped after INTERRUPT epochs and resumed."""
    root = tmp_path_factory.mktemp("resume")
    whole = _fit(root / "whole", EPOCHS)
    _fit(root / "first_part", INTERRUPT)
    resumed = _fit(root / "resumed", EPOCHS, "--ckpt_path", str(_checkpoint(root / "first_part")))
    return {"root": root, "whole": whole, "resumed": resumed}


def _logged(run_dir: Path) -> pd.DataFrame:
    """The CSV log: one row per epoch after the interruption (train and validation metrics
    merged) and the test row (epoch = EPOCHS after the last training epoch)."""
    (path,) = run_dir.rglob("metrics.csv")
    log = pd.read_csv(path).drop(columns="step")
    return log[log.epoch >= INTERRUPT].groupby("epoch").first()


def test_resumed_run_ends_with_the_same_metrics(runs):
    assert runs["whole"].trainer.current_epoch == runs["resumed"].trainer.current_epoch == EPOCHS
    whole, resumed = _logged(runs["root"] / "whole"), _logged(runs["root"] / "resumed")
    assert list(resumed.index) == list(range(INTERRUPT, EPOCHS + 1))  # the test row: epoch EPOCHS
    assert {"train_loss", "val_loss", "val_acc", "test_acc"} <= set(whole.columns)
    # every epoch after the interruption, and the test of the final checkpoint
    pd.testing.assert_frame_equal(resumed, whole.loc[resumed.index], rtol=1e-6, atol=1e-7)
    assert whole.test_acc.notna().sum() == 1


def test_resumed_run_ends_with_the_same_weights(runs):
    root = runs["root"]
    whole = torch.load(_checkpoint(root / "whole"), weights_only=True)
    resumed = torch.load(_checkpoint(root / "resumed"), weights_only=True)
    assert whole["epoch"] == resumed["epoch"] == EPOCHS - 1
    for name, value in whole["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], value, rtol=1e-6, atol=1e-7, msg=name)


def test_checkpoint_holds_the_random_states(runs):
    state = torch.load(_checkpoint(runs["root"] / "whole"), weights_only=True)
    (saved,) = [value for key, value in state["callbacks"].items() if "RandomStateCheckpoint" in key]
    assert set(saved) == {"torch", "cuda", "numpy", "python"}


# ---------------------------------------------------------------------------------------------
# Bad checkpoint files: one clear error naming the file, before anything is built
# ---------------------------------------------------------------------------------------------


def _damaged(good: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    data = good.read_bytes()
    cases = {
        "truncated": (data[: len(data) // 2], r"truncated"),
        "cut short by a few bytes": (data[:-10], r"truncated"),
        "flipped bits in tensor data": (None, r"corrupted: the data of .* fails its checksum"),
        "empty": (b"", r"empty \(0 bytes\)"),
        "text": (b"this is not a checkpoint\n" * 10, r"not a PyTorch checkpoint"),
    }
    paths = {}
    for name, (content, message) in cases.items():
        path = folder / f"{name.replace(' ', '_')}.ckpt"
        if content is None:
            content = bytearray(data)
            content[int(len(data) * 0.6)] ^= 0xFF  # the tensors lie in the middle of the archive
        path.write_bytes(bytes(content))
        paths[name] = (path, message)
    not_lightning = folder / "weights_only.pt"
    torch.save({"weight": torch.zeros(3)}, not_lightning)
    paths["plain torch file"] = (not_lightning, r"not a Lightning checkpoint: it has no 'state_dict'")
    paths["missing"] = (folder / "nowhere.ckpt", r"does not exist")
    paths["a folder"] = (folder, r"is not a file")
    return paths


def test_bad_checkpoints_are_named_with_the_problem(runs, tmp_path):
    good = _checkpoint(runs["root"] / "whole")
    check_checkpoint(good)  # the real one passes
    for name, (path, message) in _damaged(good, tmp_path).items():
        with pytest.raises(CheckpointError, match=message) as info:
            check_checkpoint(path)
        assert str(path) in str(info.value) and "--ckpt_path" in str(info.value), name


def test_lightning_keywords_are_left_to_lightning():
    for value in (None, "last", "best", "hpc", "registry", "registry:model:latest", "s3://bucket/x.ckpt"):
        check_checkpoint(value)


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_command_reports_a_truncated_checkpoint(runs, tmp_path, subcommand):
    good = _checkpoint(runs["root"] / "whole")
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=str(bad)):
        main([subcommand, "--config", str(KARATE), "--ckpt_path", str(bad),
              "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"])
    assert not list(tmp_path.rglob("config.yaml"))  # stopped before the run started


def test_shell_gets_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"PK\x03\x04 broken")
    # main() without arguments reads the command line, as the installed `graphmem` script does
    monkeypatch.setattr(sys, "argv", ["graphmem", "fit", "--config", str(KARATE), "--ckpt_path", str(bad)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    expected = (f"graphmem: error: checkpoint file {bad} (11 bytes) is truncated or is not a PyTorch "
                f"checkpoint (no zip archive index found); pass another checkpoint with --ckpt_path "
                f"(e.g. an earlier epoch's), or train again without it\n")
    assert capsys.readouterr().err == expected
