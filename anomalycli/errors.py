class UserError(Exception):
    """A problem the user can fix. Its message is one line: what is wrong and how to fix it."""

    exit_code = 1


class UsageError(UserError):
    """An option or argument out of range: the same exit code as Typer's own usage errors."""

    exit_code = 2


class Interrupted(UserError):
    """Ctrl-C: what was kept and how to go on, in one line; exit 130, as a shell gives."""

    exit_code = 130
