"""The number format a run trains in, and when another one would be faster on this machine.

"auto" is bf16 on a GPU that has it and fp32 on a CPU, even a CPU with native bf16 arithmetic (AVX-512 BF16, AMX):
there bf16 autocast is much faster (`bench/train_throughput.py`: MiniLM-L6 about 2x on this machine's AMD EPYC), but
its numbers differ from fp32's, and a CPU run is often a reference or a test whose figures should not move with the
machine it lands on. So the faster choice is offered in words (`precision_hint`), not made silently.
"""

from __future__ import annotations

from core.errors import UserError


def mixed_precision(precision: str, device: str) -> tuple[bool, bool]:
    """(bf16, fp16) flags; 'auto' means bf16 on a GPU that has it, fp32 elsewhere."""
    if device != "cuda":
        if precision == "fp16":
            raise UserError("fp16 needs a GPU; on the CPU choose fp32 (or auto).")
        return precision == "bf16", False
    import torch

    bf16_ok = torch.cuda.is_bf16_supported()
    if precision == "bf16" and not bf16_ok:
        raise UserError("This GPU does not support bf16; choose fp16 or fp32.")
    return (precision == "bf16" or (precision == "auto" and bf16_ok)), precision == "fp16"


def cpu_computes_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware, which oneDNN then uses for bf16 autocast. On a CPU without
    it, bf16 is emulated and slower than fp32."""
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def precision_hint(device: str, precision: str) -> str | None:
    """A sentence for a CPU run that could train faster in bf16 here, or None."""
    from core.jobs import resolve_device

    if precision == "bf16" or resolve_device(device) != "cpu" or not cpu_computes_bf16():
        return None
    return (
        "This CPU computes bf16 in hardware: precision bf16 trains about twice as fast here (mixed precision: the "
        "weights stay fp32, the matrix products run in bf16). auto keeps fp32 on a CPU, whose numbers do not depend on "
        "the machine."
    )
