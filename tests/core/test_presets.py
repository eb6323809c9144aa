"""Teaching presets: valid configs whose variants differ only in the knobs the lesson is about."""

import pytest

from core.presets import PRESETS


@pytest.mark.parametrize("key", list(PRESETS))
def test_every_preset_is_a_valid_config_with_a_lesson(key):
    preset = PRESETS[key]
    assert len(preset.watch_for) > 100
    for config in preset.configs():
        assert config.validate() == []
        assert config.name.startswith(preset.title)


def test_seed_preset_matches_the_seed_recipe():
    (config,) = PRESETS["seed"].configs()
    assert (config.learning_rate, config.batch_size, config.model, config.dataset) == (2e-5, 16, "minilm-l6", "movie-reviews")


@pytest.mark.parametrize(
    "key, knobs",
    [
        ("probe-vs-full", {"name", "strategy", "learning_rate"}),
        ("lora-vs-full", {"name", "strategy", "lora_r", "learning_rate"}),
        ("adversarial-vs-plain", {"name", "adversarial", "adv_epsilon"}),
    ],
)
def test_comparison_variants_differ_only_in_the_lesson(key, knobs):
    first, second = PRESETS[key].configs()
    assert set(first.differences(second)) <= knobs
    assert "name" in first.differences(second)
