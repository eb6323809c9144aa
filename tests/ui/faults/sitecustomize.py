"""Fault injection for trainer processes started by the tests (never imported by the product).

A test puts this folder on PYTHONPATH and names a plan file in WORKBENCH_FAULT_PLAN; Python then
imports this module at start-up in every process the job manager spawns. Only trainer processes
(`python -m core worker …`) are touched: their save functions are wrapped before transformers
imports them, so a save can be cut off in the middle of writing a file, as a kill -9 or a full
disk would. The plan is re-read at each save, so a test can change it between attempts.

Plan keys (JSON):
- "kill_at_save": N   write half of the N-th file this process saves, then SIGKILL itself.
- "kill_at_step": N   SIGKILL itself right after its N-th optimizer step (a moment inside training).
- "disk_full_flag": P while the file P exists, every save writes half its bytes and raises ENOSPC.
"""

import errno
import io
import json
import os
import signal
import sys

_PLAN = os.environ.get("WORKBENCH_FAULT_PLAN")
_saves = 0


def _plan() -> dict:
    try:
        with open(_PLAN, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _cut_short(data: bytes, path) -> None:
    """Write what an interrupted save leaves behind: the first half of the file."""
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())


def _maybe_fail(data_of, path) -> None:
    global _saves
    _saves += 1
    plan = _plan()
    if plan.get("kill_at_save") == _saves:
        _cut_short(data_of(), path)
        os.kill(os.getpid(), signal.SIGKILL)
    flag = plan.get("disk_full_flag")
    if flag and os.path.exists(flag):
        _cut_short(data_of(), path)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))


def _install() -> None:
    import safetensors.torch
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    torch_save, safetensors_save = torch.save, safetensors.torch.save_file

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):

            def data():
                buffer = io.BytesIO()
                torch_save(obj, buffer, *args, **kwargs)
                return buffer.getvalue()

            _maybe_fail(data, f)
        return torch_save(obj, f, *args, **kwargs)

    def save_file(tensors, filename, *args, **kwargs):
        _maybe_fail(lambda: safetensors.torch.save(tensors, *args, **kwargs), filename)
        return safetensors_save(tensors, filename, *args, **kwargs)

    torch.save = save
    safetensors.torch.save_file = save_file
    register_optimizer_step_post_hook(_count_step)


_steps = 0


def _count_step(optimizer, args, kwargs) -> None:
    global _steps
    _steps += 1
    if _plan().get("kill_at_step") == _steps:
        os.kill(os.getpid(), signal.SIGKILL)


if _PLAN and sys.orig_argv[-3:-1] == ["core", "worker"]:
    _install()
