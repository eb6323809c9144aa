"""The one exception type that carries a sentence for the user.

Everything in `core` that fails because of something the user can fix raises `UserError`
with a message that says what is wrong and how to fix it. Pages show `str(error)`; the CLI
prints it and exits with status 2. Anything else is a bug and keeps its traceback in the log.
"""


class UserError(Exception):
    """A problem the user can fix; `str()` is a sentence saying what is wrong and what to do."""
