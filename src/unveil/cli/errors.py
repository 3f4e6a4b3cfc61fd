"""How the ``unveil`` command fails: one place maps every error to an exit code.

A person at a terminal should read one clear sentence about what went wrong,
never a Python traceback, whatever the server answered. Commands raise (or
let through) the exceptions below, ``InvalidDocument`` for a refused file,
and ``click``'s own usage errors; ``UnveilGroup`` turns each into a message
on stderr and its exit code:

    0  EXIT_OK           done
    1  EXIT_REFUSED      the input was refused: a bad flags file, or the server
                         said no (any 4xx: not found, conflict, invalid, denied)
    2  EXIT_USAGE        the command was used wrongly (click's usage errors; a
                         scan of a path that is not there, a bad --pattern)
    3  EXIT_UNAVAILABLE  something needed is not there: the server cannot be
                         reached or failed (5xx), the port to serve on is taken
    4  EXIT_BAD_ANSWER   the server answered something this CLI cannot read
                         (not JSON, missing fields, a document it refuses)
    5  EXIT_VERIFY_FAILED  ``unveil deploy verify`` ran its checks and one failed
                         (the result and its evidence are stored on the deploy)
    70 EXIT_BUG          anything else: a bug in unveil, said in one line
                         (set UNVEIL_DEBUG=1 to see the traceback)

    CliError(click.ClickException)   a message and an exit code
    ├── Refused                       a flags file refused: every problem, its path
    ├── RemoteError                   the server said no, or failed: status,
    │                                 message and every problem it listed
    ├── Unavailable                   cannot reach the server; port taken
    ├── BadAnswer                     an answer that is not what the API promises
    └── VerificationFailed            a deploy's verification ran and failed
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import click
import httpx

from unveil.core import InvalidDocument, Problem, UnveilError
from unveil.service.references import ScanError

__all__ = [
    "EXIT_BAD_ANSWER",
    "EXIT_BUG",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "EXIT_VERIFY_FAILED",
    "BadAnswer",
    "CliError",
    "Refused",
    "RemoteError",
    "UnveilGroup",
    "Unavailable",
    "VerificationFailed",
    "field",
    "refused_message",
]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_BAD_ANSWER = 4
EXIT_VERIFY_FAILED = 5
EXIT_BUG = 70


class CliError(click.ClickException):
    """A failure told to people in words, with the exit code that says its kind."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code  # type: ignore[misc]  # click declares it per class


class Refused(CliError):
    """Input refused whole: every problem with its path (the message says "refused:" itself)."""

    def __init__(self, problems: Sequence[Problem], heading: str = "refused") -> None:
        super().__init__(refused_message(problems, heading))

    def show(self, file: Any = None) -> None:
        """The problems as they are, without click's "Error: " in front of "refused:"."""
        click.echo(self.format_message(), err=True, file=file)


class Unavailable(CliError):
    """Something the command needs is not there (a server, a free port)."""

    exit_code = EXIT_UNAVAILABLE


class BadAnswer(CliError):
    """The server answered, but not in the shape its API promises."""

    exit_code = EXIT_BAD_ANSWER


class VerificationFailed(CliError):
    """A deploy's verification ran and a check failed (not an error of the command)."""

    exit_code = EXIT_VERIFY_FAILED


class RemoteError(CliError):
    """The server said no (4xx, exit 1) or failed (5xx, exit 3)."""

    def __init__(self, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, Mapping):
            body = {"error": response.text[:500] or response.reason_phrase}
        problems = body.get("problems")
        error = str(body.get("error") or "request failed")
        listed = isinstance(problems, Sequence) and not isinstance(problems, str) and problems
        if listed:  # the problems follow one a line: the error's own text would repeat them
            error = error.splitlines()[0]
            if ": " in error and any(
                isinstance(p, Mapping) and error.startswith(f"{p.get('path')}: ") for p in problems
            ):
                error = "refused"
        lines = [f"{response.status_code}: {error}"]
        if isinstance(problems, Sequence) and not isinstance(problems, str):
            lines += [
                f"  {p.get('path') or '(document)'}: {p.get('message')}"
                for p in problems
                if isinstance(p, Mapping)
            ]
        failed = response.status_code >= 500
        super().__init__("\n".join(lines), EXIT_UNAVAILABLE if failed else None)
        self.status = response.status_code


def field(body: Any, name: str, kind: type | tuple[type, ...], where: str = "answer") -> Any:
    """``body[name]`` if the answer has it and it is of the promised type; BadAnswer if not.

    Every read of a server answer goes through here, so that an answer of an
    unexpected shape is one clear sentence instead of a KeyError traceback.
    """
    if not isinstance(body, Mapping):
        raise BadAnswer(f"the server's {where} is not a JSON object")
    if name not in body:
        raise BadAnswer(f"the server's {where} has no '{name}'")
    value = body[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        wanted = " or ".join(_NAMES.get(k, k.__name__) for k in _kinds(kind))
        raise BadAnswer(
            f"the server's {where}: '{name}' is {_NAMES.get(type(value), 'something else')}, "
            f"not {wanted}"
        )
    return value


_NAMES: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "text",
    int: "a whole number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def refused_message(problems: Sequence[Problem], heading: str = "refused") -> str:
    """Every problem of a refused document on its own line, with its path."""
    lines = [f"{heading}: {len(problems)} problem(s)"]
    lines += [f"  {p.path or '(document)'}: {p.message}" for p in problems]
    return "\n".join(lines)


class UnveilGroup(click.Group):
    """The command group whose ``invoke`` is the one place errors become exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click prints these itself, with their own exit codes
        except InvalidDocument as exc:  # a file the user gave was refused
            raise Refused(exc.problems) from None
        except ScanError as exc:  # the path or a pattern given to a scan
            raise CliError(str(exc), EXIT_USAGE) from None
        except UnveilError as exc:
            raise CliError(str(exc)) from None
        except BrokenPipeError:
            raise  # the reader went away (`| head`): click ends quietly
        except OSError as exc:  # a file that cannot be read or written
            where = f"{exc.filename}: " if exc.filename else ""
            raise CliError(f"{where}{exc.strerror or exc}") from None
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach the server: {exc}") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"talking to the server failed: {exc}") from None
        except Exception as exc:
            if os.environ.get("UNVEIL_DEBUG"):
                raise
            message = f"unexpected {type(exc).__name__}: {exc}"
            raise CliError(
                f"{message} (a bug in unveil; UNVEIL_DEBUG=1 shows the traceback)", EXIT_BUG
            ) from None
