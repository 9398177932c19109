"""A patched model trains under FSDP2 (torch.distributed.fsdp.fully_shard, two processes
on gloo / CPU): the loss and every parameter's gradient equal the unpatched model's on
the whole batch, with timm's activation checkpointing on."""
import os

import pytest
import torch
import torch.nn as nn

from helpers import random_tensor, spawn_gloo_workers
from test_patch import build
import fastswin

fsdp = pytest.importorskip("torch.distributed.fsdp")
pytestmark = pytest.mark.usefixtures("fastswin_path_on_cpu")  # conftest.py


def _worker(rank, world, init_file, x, y, out_dir):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = build("timm", "v1").double()
    model.set_grad_checkpointing(True)
    report = fastswin.patch(model)
    assert report.complete and not any("library's own" in e.runs for e in report.replaced)  # fastswin's path
    mesh = init_device_mesh("cpu", (world,))
    for block in [m for layer in model.layers for m in layer.blocks]:
        fsdp.fully_shard(block, mesh=mesh)
    fsdp.fully_shard(model, mesh=mesh)
    shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    loss = nn.functional.cross_entropy(model(x[shard]), y[shard])
    loss.backward()
    grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}  # DTensors -> whole gradients
    losses = [torch.zeros(()) for _ in range(world)]
    dist.all_gather(losses, loss.detach().float())
    if rank == 0:
        torch.save({"grads": grads, "loss": sum(losses) / world}, os.path.join(out_dir, "fsdp.pt"))
    dist.barrier()  # no rank tears gloo down while the other still talks
    dist.destroy_process_group()


def test_fsdp2_two_processes_match_the_unpatched_model(tmp_path):
    x = random_tensor((4, 3, 60, 60), torch.float64, "cpu", 12)
    y = torch.tensor([1, 3, 5, 7])
    spawn_gloo_workers(_worker, tmp_path, 2, x, y, str(tmp_path))
    model = build("timm", "v1").double()
    loss = nn.functional.cross_entropy(model(x), y)  # unpatched, whole batch
    loss.backward()
    got = torch.load(tmp_path / "fsdp.pt")
    torch.testing.assert_close(got["loss"].double(), loss.detach(), rtol=1e-6, atol=1e-7)
    for name, p in model.named_parameters():
        torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-9, atol=1e-12, msg=name)
