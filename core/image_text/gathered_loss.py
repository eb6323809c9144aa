"""CLIP's contrastive loss when several processes train together: each pair's negatives are every process's batch.

Left to the model, each process of a data-parallel run computes the loss over its own batch, so an image meets
batch-size - 1 wrong captions instead of global batch - 1: the larger global batch buys no harder negatives, which is
most of why contrastive training wants it. As open_clip does, each process gathers every process's embeddings (with
gradients flowing back to their owners: `torch.distributed.nn.functional.all_gather`) and scores its own rows against
all of them. The mean of the processes' losses is then the loss of one process over the global batch, and the
gradients DDP averages are that loss's gradients.

SigLIP's sigmoid loss scores every pair on its own and keeps its per-process form (`gathers_negatives`).
"""

from __future__ import annotations

CLIP_STYLE_TYPES = ("vision-text-dual-encoder", "clip", "chinese_clip")  # the symmetric InfoNCE of CLIP


def gathers_negatives(model) -> bool:
    """Whether this dual encoder's loss is CLIP's, which the gathered form below reproduces."""
    return getattr(model.config, "model_type", None) in CLIP_STYLE_TYPES


def gathered_clip_loss(image_embeds, text_embeds, scale):
    """CLIP's loss of this process's rows (unit-length (N, D) embeddings) against every process's: the mean over images
    and over texts of the cross-entropy of the matching pair. One process: exactly the model's own loss."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        all_images, all_texts, offset = image_embeds, text_embeds, 0
    else:
        import warnings

        from torch.distributed.nn.functional import all_gather

        with warnings.catch_warnings():
            # torch 2.13 marks it deprecated for a private successor; it is still the public all-gather with autograd.
            warnings.simplefilter("ignore", FutureWarning)
            all_images = torch.cat(all_gather(image_embeds))
            all_texts = torch.cat(all_gather(text_embeds))
        offset = dist.get_rank() * image_embeds.shape[0]  # every process's batch is the same size (DDP's sampler)
    targets = torch.arange(image_embeds.shape[0], device=image_embeds.device) + offset
    per_image = scale * image_embeds @ all_texts.T  # this process's images against every caption
    per_text = scale * text_embeds @ all_images.T
    return (F.cross_entropy(per_image, targets) + F.cross_entropy(per_text, targets)) / 2
