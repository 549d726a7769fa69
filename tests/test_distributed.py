"""Multi-process training with Lightning's DDP strategy (2 CPU processes, gloo) through the
graphmem command, and the padding repeats of the distributed sampler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from graphmem.cli import main
from graphmem.lit.distributed import padding_repeats
from tests.conftest import molecule_table, write_tox21

TOX21 = Path(__file__).resolve().parent.parent / "recipes" / "tox21_gat.yaml"


@pytest.mark.parametrize("size, replicas", [(25, 2), (24, 2), (10, 3), (11, 4), (3, 4)])
def test_padding_repeats_are_the_positions_past_the_dataset(size, replicas):
    dataset = list(range(size))
    seen: list[int] = []
    for rank in range(replicas):
        for shuffle in (False, True):
            sampler = DistributedSampler(dataset, num_replicas=replicas, rank=rank, shuffle=shuffle, seed=3)
            order = list(sampler)
            repeats = padding_repeats(DataLoader(dataset, sampler=sampler), len(order))
            kept = order[: len(order) - repeats]
            if shuffle:
                seen += kept
    # the kept examples of all ranks are the dataset, each once
    assert sorted(seen) == dataset


def test_no_repeats_without_a_distributed_sampler_or_when_cut_short():
    dataset = list(range(5))
    assert padding_repeats(DataLoader(dataset), 5) == 0
    sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=False)
    assert padding_repeats(DataLoader(dataset, sampler=sampler), 3) == 1
    assert padding_repeats(DataLoader(dataset, sampler=sampler), 2) == 0  # limit_test_batches stopped early


def _common(tox21_root: Path, run_dir: Path) -> list[str]:
    return ["--config", str(TOX21), "--data.init_args.root", str(tox21_root),
            "--model.init_args.model.init_args.hidden_channels", "16",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run_dir)]


def test_ddp_two_processes_test_roc_auc_equals_whole_test_set(tmp_path):
    """250 molecules -> 200 / 25 / 25: the validation and test sets are odd, so the 2-rank
    sampler pads each with one repeat, which must not count in the ROC-AUC. The molecules are
    distinct: copies of one molecule would tie, and batches of other sizes break float ties in
    other ways, which moves ROC-AUC as much as a counted repeat would."""
    tox21_root = tmp_path / "data"
    distinct = [f"{'C' * n}{group}" for group in ("O", "N", "Cl", "F", "C(=O)O") for n in range(1, 51)]
    write_tox21(tox21_root, molecule_table(250, molecules=distinct))
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "graphmem", "fit", *_common(tox21_root, run_dir),
               "--trainer.logger.init_args.save_dir", str(run_dir), "--trainer.max_epochs", "1",
               "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout

    (metrics,) = run_dir.rglob("metrics.csv")
    ddp_auc = pd.read_csv(metrics)["test_roc_auc"].dropna()
    assert len(ddp_auc) == 1
    (best,) = run_dir.rglob("best-*.ckpt")
    # the same checkpoint tested in one process on the whole test set
    torch.set_num_threads(1)
    single = main(["test", *_common(tox21_root, tmp_path / "single"), "--trainer.logger", "false",
                   "--trainer.devices", "1", "--trainer.accelerator", "cpu", "--ckpt_path", str(best)])
    whole_auc = float(single.trainer.callback_metrics["test_roc_auc"])
    assert len(single.datamodule.splits["test"]) == 25
    assert float(ddp_auc.iloc[0]) == pytest.approx(whole_auc, abs=1e-6)
