"""Groundwork for image-text training: shapes set, retrieval metrics, the offline dual encoder."""

import numpy as np
import pytest

from core.image_text.metrics import match_ranks, retrieval_metrics
from core.image_text.shapes import COLOURS, shapes_examples


def test_ranks_and_recall_on_a_hand_made_similarity_matrix():
    similarity = np.array(
        [
            [0.9, 0.1, 0.2],  # image 0: its caption first
            [0.8, 0.5, 0.1],  # image 1: its caption second
            [0.3, 0.7, 0.2],  # image 2: its caption last
        ]
    )
    assert match_ranks(similarity).tolist() == [1, 2, 3]
    metrics = retrieval_metrics(similarity, ks=(1, 2))
    assert metrics["image_to_text_recall@1"] == pytest.approx(1 / 3)
    assert metrics["image_to_text_recall@2"] == pytest.approx(2 / 3)
    assert metrics["image_to_text_median_rank"] == 2
    # Columns: caption 0's best image is image 0; caption 1's is image 2 (rank 2); caption 2's is image 0 (rank 2).
    assert match_ranks(similarity.T).tolist() == [1, 2, 2]
    assert metrics["text_to_image_recall@1"] == pytest.approx(1 / 3)


def test_retrieval_metrics_refuse_a_non_square_matrix():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.zeros((2, 3)))


def test_shapes_are_deterministic_and_masks_mark_the_coloured_pixels():
    first, again = shapes_examples(20, seed=3), shapes_examples(20, seed=3)
    assert [e.caption for e in first] == [e.caption for e in again]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(first, again))
    assert [e.caption for e in shapes_examples(20, seed=4)] != [e.caption for e in first]
    for example in first:
        assert example.colour in example.caption and example.shape in example.caption
        pixels = np.asarray(example.image)[example.mask]
        assert len(pixels) > 20
        assert np.abs(pixels.astype(int) - np.array(COLOURS[example.colour])).max() <= 1
        top_half = example.mask[: example.mask.shape[0] // 2].any()
        assert top_half == example.position.startswith("top")


def test_dual_encoder_from_the_two_built_in_towers_gives_a_symmetric_contrastive_loss(workspace):
    import torch
    from transformers import AutoTokenizer, VisionTextDualEncoderModel

    from core.catalog import MINILM_L6
    from core.catalog_images import MOBILENET_V2

    model = VisionTextDualEncoderModel.from_vision_text_pretrained(
        str(MOBILENET_V2.local_dir()), str(MINILM_L6.local_dir()), projection_dim=32
    )
    tokenizer = AutoTokenizer.from_pretrained(MINILM_L6.local_dir())
    examples = shapes_examples(4, seed=1)
    pixels = torch.tensor(np.stack([np.asarray(e.image.resize((64, 64)), dtype=np.float32) / 255 for e in examples])).permute(
        0, 3, 1, 2
    )
    text = tokenizer([e.caption for e in examples], padding=True, return_tensors="pt")
    output = model(pixel_values=pixels, **text, return_loss=True)
    assert output.logits_per_image.shape == (4, 4)
    assert torch.allclose(output.logits_per_image, output.logits_per_text.T)
    loss_images = torch.nn.functional.cross_entropy(output.logits_per_image, torch.arange(4))
    loss_texts = torch.nn.functional.cross_entropy(output.logits_per_text, torch.arange(4))
    assert output.loss.item() == pytest.approx(((loss_images + loss_texts) / 2).item(), rel=1e-5)
