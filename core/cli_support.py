"""What every `python -m core` command shares: the error handling around a command, and safe terminal text.

Apart from `core/cli.py`, which assembles the commands (its own, `core.data_cli`'s and
`core.explain.cli`'s), so that those modules use these without importing the module that imports them.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
import traceback
from pathlib import Path

from core.errors import UserError

ERROR_LOG = "cli-errors.log"  # in the workspace: tracebacks of the unexpected failures the CLI reports in a sentence


def run_command(arguments: argparse.Namespace) -> int:
    """Run a parsed command. A problem the user can fix, and the machine's own failures (permissions, a full disk,
    a read-only or broken run store), end as one `error: …` sentence and exit status 2 instead of a traceback;
    any other exception is a bug and keeps its traceback."""
    try:
        return arguments.handler(arguments)
    except UserError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `python -m core runs | head`: the reader has gone. Python's advice: point stdout at devnull so the
        # flush at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, sqlite3.Error) as error:
        if arguments.command in ("worker", "sweep-driver"):
            raise  # the trainer's traceback belongs in its run log, from which the job manager reports the failure
        log = write_traceback()
        where = f"the full traceback is in {log}" if log else "no log could be written, so the traceback follows"
        print(
            f"error: `{arguments.command}` stopped on an unexpected error ({type(error).__name__}: {error}); check that "
            f"the files it names can be written and the disk is not full, then try again; {where}.",
            file=sys.stderr,
        )
        if not log:
            traceback.print_exc()
        return 2


def write_traceback() -> Path | None:
    """Append the exception being handled to the workspace's error log (a temp-folder one when the workspace is the
    problem); the log's path, or None when neither can be written."""
    from core.workspace import workspace_root

    entry = f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} python -m core {' '.join(sys.argv[1:])}\n{traceback.format_exc()}\n"
    candidates = [Path(tempfile.gettempdir()) / f"workbench-{ERROR_LOG}"]
    try:
        candidates.insert(0, workspace_root() / ERROR_LOG)
    except UserError:
        pass  # the workspace is what failed: the temp folder's log it is
    for log in candidates:
        try:
            with log.open("a", encoding="utf-8") as handle:
                handle.write(entry)
            return log
        except OSError:
            continue
    return None


def shown(text: str) -> str:
    """`text` safe for one terminal line: control characters (escapes, newlines, bidi overrides) written as Python
    escapes such as \\x1b and \\n, so a run name cannot forge lines or colours; printable unicode stays as it is."""
    return "".join(character if character.isprintable() else ascii(character)[1:-1] for character in text)
