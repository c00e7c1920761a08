"""Two CPU processes (gloo on loopback) train with DistributedDataParallel and end with identical weights."""

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
    assert len(t.train_loader) == 96 // world // 8  # each rank sees its shard
    t.fit()
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
