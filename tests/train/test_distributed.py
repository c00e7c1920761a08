"""Two CPU processes (gloo on loopback) train with DistributedDataParallel: identical weights on both, the global
batch of one process (so its learning rate applies), and the command line prints its summary once."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from torch.utils.data import DataLoader

    from slimkit.train import TrainConfig, Trainer
    from tests.train.test_trainer import _data, _model

    model = _model()
    t = Trainer(model, TrainConfig(epochs=2, lr=0.05, progress=False), DataLoader(_data(), batch_size=8, shuffle=True))
    assert t.dist.world_size == world and t.dist.rank == rank
    assert len(t.train_loader) == 96 // 8  # each rank sees its shard, 8 // world images a step: global batch 8
    assert t.train_loader.batch_size == 8 // world
    t.fit()
    assert t.global_step == 2 * 96 // 8  # as many optimizer steps as one process takes
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _cli_worker(rank, world, port, out):
    import contextlib
    import sys

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with open(f"{out}/rank{rank}.txt", "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        import slimkit.cli._common as common
        from slimkit.cli.main import main

        common.console.file = sys.stdout
        code = main(["train", "--model", "convnet_tiny", "--data", "digits", "--limit", "100", "--epochs", "1",
                     "--batch-size", "16", "--out", f"{out}/run"])
    assert code == 0
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_the_command_line_under_two_processes_prints_once(tmp_path):
    mp.spawn(_cli_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text() for r in (0, 1))
    assert "slimkit train" in rank0 and "global batch 16" in rank0
    assert "slimkit train" not in rank1 and "global batch" not in rank1
    assert (tmp_path / "run" / "summary.json").is_file()
