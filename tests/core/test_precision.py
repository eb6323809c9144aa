"""`core.precision`: the flags a precision gives Trainer on each device, and the Train page's sentence for a CPU that
computes bf16 in hardware (the CPU's answer is stood in for, both ways, so the test holds on any machine)."""

from __future__ import annotations

import pytest

from core import precision
from core.errors import UserError


def test_a_cpu_run_is_fp32_unless_bf16_is_asked_for_and_fp16_gets_a_sentence():
    assert precision.mixed_precision("auto", "cpu") == (False, False)
    assert precision.mixed_precision("fp32", "cpu") == (False, False)
    assert precision.mixed_precision("bf16", "cpu") == (True, False)
    with pytest.raises(UserError, match="fp16 needs a GPU"):
        precision.mixed_precision("fp16", "cpu")


@pytest.mark.parametrize("native", [True, False])
def test_the_bf16_sentence_appears_only_for_a_cpu_run_that_is_not_bf16_on_a_cpu_that_computes_it(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: native)
    for device in ("cpu", "auto"):  # auto is the CPU on a machine without a GPU
        hint = precision.precision_hint(device, "auto")
        assert (hint is not None and "bf16 in hardware" in hint) == (native and (device == "cpu" or not gpu_here()))
    assert precision.precision_hint("cpu", "bf16") is None
    assert precision.precision_hint("cuda", "auto") is None


def gpu_here() -> bool:
    import torch

    return torch.cuda.is_available()


def test_the_train_page_says_when_bf16_would_be_faster_on_this_cpu(workspace, monkeypatch):
    from test_pages import open_page

    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: True)
    app = open_page("pages/views/train.py")
    app.selectbox(key="train_device").set_value("cpu").run()
    assert any("bf16 in hardware" in caption.value for caption in app.caption)
    app.selectbox(key="train_precision").set_value("bf16").run()
    assert not app.error and not any("bf16 in hardware" in caption.value for caption in app.caption)
