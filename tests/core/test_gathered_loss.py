"""`core.image_text.gathered_loss`: CLIP's loss over every process's batch. One process: the model's own loss. Two
gloo processes, each with half of a batch: the mean of their losses is the one-process loss over the whole batch, and
the gradients reaching each process's embeddings (through the gather) are that loss's, times the two that DDP divides
by."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from core.image_text.gathered_loss import gathered_clip_loss

ROWS, DIM, SCALE = 8, 6, 7.0


def batch():
    generator = torch.Generator().manual_seed(3)
    images = F.normalize(torch.randn(ROWS, DIM, generator=generator), dim=-1)
    texts = F.normalize(images + 0.8 * torch.randn(ROWS, DIM, generator=generator), dim=-1)  # matched, noisily
    return images, texts


def full_batch():
    """The loss and its gradients with respect to every embedding, in one process."""
    images, texts = (tensor.clone().requires_grad_(True) for tensor in batch())
    loss = gathered_clip_loss(images, texts, SCALE)
    loss.backward()
    return loss.detach(), images.grad, texts.grad


def test_in_one_process_it_is_the_models_own_clip_loss():
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss

    images, texts = batch()
    assert torch.allclose(gathered_clip_loss(images, texts, SCALE), image_text_contrastive_loss(SCALE * texts @ images.T))


def half_on_each_rank(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        share = slice(rank * ROWS // world, (rank + 1) * ROWS // world)
        images, texts = (tensor[share].clone().requires_grad_(True) for tensor in batch())
        loss = gathered_clip_loss(images, texts, SCALE)
        loss.backward()
        torch.save({"loss": loss.detach(), "images": images.grad, "texts": texts.grad}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_each_with_half_the_batch_give_the_whole_batchs_loss_and_gradients(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = str(tmp_path / "rank")
    mp.spawn(half_on_each_rank, args=(2, port, out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{rank}") for rank in range(2)]
    loss, image_grads, text_grads = full_batch()
    assert torch.allclose((ranks[0]["loss"] + ranks[1]["loss"]) / 2, loss, atol=1e-6)
    # Each rank's loss alone would be another number: its rows met the other rank's captions as negatives too.
    assert not torch.allclose(ranks[0]["loss"], gathered_clip_loss(*(tensor[: ROWS // 2] for tensor in batch()), SCALE))
    torch.testing.assert_close(torch.cat([rank["images"] for rank in ranks]) / 2, image_grads, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(torch.cat([rank["texts"] for rank in ranks]) / 2, text_grads, atol=1e-6, rtol=1e-5)
