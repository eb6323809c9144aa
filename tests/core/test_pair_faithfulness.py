"""Cross-modal faithfulness, checked against known answers: the built-in dual encoder trained briefly on the
synthetic shapes (once for the module), and the patch a word's map ranks first asked to lie on the shape that word
describes, for pairs the model matches correctly. The untrained model is the control, because a baseline that
differs from the image only on the shape (a blur, a grey copy) points there whatever the model learned.

Apart from the mechanics in test_explain_pairs.py so that the two, each minutes long, can run side by side.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from test_explain_pairs import GRID, SIZE, builtin, dual_encoder, two_threads, untrained

from core.explain import PairExplainer, pair_randomization_check, patches
from core.image_text.shapes import shapes_examples

__all__ = ["builtin", "two_threads", "untrained"]  # fixtures this module uses, defined with the mechanics

CHECKED = 20  # correctly matched held-out pairs the faithfulness checks look at
EPOCHS = 8  # of contrastive training: 4 and 6 matched 73 % and 75 % of held-out pairs on two AMD EPYCs; 8 matched 47 of 48


@pytest.fixture(scope="module")
def trained(builtin):
    """The built-in dual encoder after EPOCHS epochs of contrastive training on 640 synthetic shapes (half a minute)."""
    _, processor, tokenizer = builtin
    torch.manual_seed(0)
    model = dual_encoder(builtin)
    examples = shapes_examples(640, seed=0, size=SIZE)
    batches = [
        (
            processor(images=[e.image for e in examples[start : start + 32]], return_tensors="pt")["pixel_values"],
            tokenizer([e.caption for e in examples[start : start + 32]], padding=True, return_tensors="pt"),
        )
        for start in range(0, len(examples), 32)
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    model.train()
    for _ in range(EPOCHS):
        for index in torch.randperm(len(batches)).tolist():
            pixels, text = batches[index]
            loss = model(pixel_values=pixels, **text, return_loss=True).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return PairExplainer(model, processor, tokenizer)


@pytest.fixture(scope="module")
def matched(trained):
    """Held-out shapes (one per colour, shape and position) whose own caption the trained model ranks first."""
    from core.image_text.models import image_embeddings, text_embeddings

    held_out, seen = [], set()
    for example in shapes_examples(400, seed=1, size=SIZE):
        if (example.colour, example.shape, example.position) not in seen:
            seen.add((example.colour, example.shape, example.position))
            held_out.append(example)
    with torch.no_grad():
        pixels = trained.image_processor(images=[e.image for e in held_out], return_tensors="pt")["pixel_values"]
        text = trained.tokenizer([e.caption for e in held_out], padding=True, return_tensors="pt")
        similarity = (image_embeddings(trained.model, pixels) @ text_embeddings(trained.model, **text).T).numpy()
    correct = [example for row, example in enumerate(held_out) if similarity[row].argmax() == row]
    assert len(correct) >= 0.8 * len(held_out), f"the model matched only {len(correct)} of {len(held_out)} pairs"
    return correct[:CHECKED]


def mask_in_input(explainer, mask: np.ndarray) -> np.ndarray:
    """The shape's mask carried through the processor's resize and crop, as the model sees the image."""
    return np.asarray(explainer.input_image(Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB")))[..., 0] >= 128


def top_cell_touches(explainer, scores, mask: np.ndarray, avoid: np.ndarray | None = None, among: int = 1) -> bool:
    """Whether one of the `among` highest-scored cells holds part of the mask (and none of `avoid`)."""
    seen, avoided = mask_in_input(explainer, mask), None if avoid is None else mask_in_input(explainer, avoid)
    boxes = patches.cell_boxes(SIZE, SIZE, (GRID, GRID))
    for x0, y0, x1, y1 in (boxes[i] for i in np.argsort(scores)[::-1][:among]):
        if seen[y0:y1, x0:x1].any() and (avoided is None or not avoided[y0:y1, x0:x1].any()):
            return True
    return False


# Which cell ranks top settles long before the integral converges: 32 steps, not the pair default of 128,
# which is chosen for a small convergence delta (none of these checks reads the delta).
WORD_MAP_STEPS = 32


def hit_rate(explainer, examples, scores_of, among: int = 1) -> float:
    return float(np.mean([top_cell_touches(explainer, scores_of(example), example.mask, among=among) for example in examples]))


def test_word_maps_point_at_the_shape_the_word_describes(trained, matched):
    """Colour words against the grey copy (colour absent), shape words against the blur (shape absent)."""
    colour = hit_rate(
        trained,
        matched,
        lambda e: (
            trained.explain_word(e.image, e.caption, e.colour, grid=GRID, image_baseline="grey", steps=WORD_MAP_STEPS).scores
        ),
    )
    shape = hit_rate(
        trained,
        matched,
        lambda e: trained.explain_word(e.image, e.caption, e.shape, grid=GRID, steps=WORD_MAP_STEPS).scores,
        among=3,
    )
    # A shape covers 2 to 9 of the 64 cells, so three cells picked at random touch it about 1 time in 4. Measured:
    # colour 100 % (top cell); shape 85-95 % (one of the top three cells). The shape's top cell alone ranged from
    # 60 % to 90 % across machines and runs of the same seeded training (float sums on CPU are not bit-stable), too
    # noisy for a threshold.
    assert colour >= 0.9 and shape >= 0.75, (colour, shape)


def test_colour_word_picks_the_named_shape_out_of_two(trained, untrained, matched):
    """With a second shape of another colour pasted in, only a model that learned colours can tell them apart."""
    others = shapes_examples(200, seed=2, size=SIZE)
    rates = {}
    for name, explainer in (("trained", trained), ("untrained", untrained)):
        hits = []
        for example in matched:
            other = next(o for o in others if o.colour != example.colour and o.position != example.position)
            image = Image.fromarray(np.where(other.mask[..., None], np.asarray(other.image), np.asarray(example.image)))
            word_map = explainer.explain_word(
                image, example.caption, example.colour, grid=GRID, image_baseline="grey", steps=WORD_MAP_STEPS
            )
            hits.append(top_cell_touches(explainer, word_map.scores, example.mask, avoid=other.mask))
        rates[name] = float(np.mean(hits))
    print(f"colour word on the named shape of two: trained {rates['trained']:.0%}, untrained {rates['untrained']:.0%}")
    # Measured 85 % trained vs 55 % untrained on this machine's stack (100 % vs 50 % when first written).
    assert rates["trained"] >= 0.8 and rates["trained"] >= rates["untrained"] + 0.2


def test_randomizing_every_layer_scrambles_the_patch_map(trained, matched):
    example = matched[0]
    check = pair_randomization_check(trained, example.image, example.caption, "ig", scope="all", grid=GRID)
    print(check["verdict"])
    assert check["patches"]["spearman"] < 0.5, check["verdict"]
    assert check["original"].score != check["randomized"].score and "every layer" in check["verdict"]
