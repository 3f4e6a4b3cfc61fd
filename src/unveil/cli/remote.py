"""Talking to a running server from the command line.

Where to and as whom, first found wins: the ``--url`` / ``--token`` /
``--project`` options, the ``UNVEIL_URL`` / ``UNVEIL_TOKEN`` /
``UNVEIL_PROJECT`` variables, then the config file (``UNVEIL_CONFIG``, or
``~/.config/unveil/config.toml``) with keys ``url``, ``token``, ``project``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import httpx

from unveil.cli.errors import BadAnswer, RemoteError, Unavailable

__all__ = [
    "DEFAULT_PROJECT",
    "DEFAULT_URL",
    "Remote",
    "RemoteError",
    "remote_options",
    "resolve_remote",
]

DEFAULT_URL = "http://127.0.0.1:8400"
#: the project used when none is named; ``unveil serve --demo`` seeds this one
DEFAULT_PROJECT = "default"


def _config() -> dict[str, Any]:
    path = Path(os.environ.get("UNVEIL_CONFIG", "~/.config/unveil/config.toml")).expanduser()
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None


@dataclass
class Remote:
    """A server, a token and a project."""

    url: str
    token: str
    project: str

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.url.rstrip("/"),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def env_path(self, env: str, rest: str = "") -> str:
        project, environment = quote(self.project, safe=""), quote(env, safe="")
        return f"/api/v1/projects/{project}/environments/{environment}{rest}"

    def flag_path(self, env: str, key: str) -> str:
        return self.env_path(env, f"/flags/{quote(key, safe='')}")

    def call(
        self,
        method: str,
        path: str,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        **kwargs: Any,
    ) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach {self.url}: {exc}") from None
        if response.status_code not in ok:
            raise RemoteError(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The answer's body, which must be a JSON object (BadAnswer if it is not)."""
        response = self.call(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise BadAnswer(f"the server's answer to {method} {path} is not JSON") from None
        if not isinstance(body, dict):
            raise BadAnswer(f"the server's answer to {method} {path} is not a JSON object")
        return body


def resolve_remote(url: str | None, token: str | None, project: str | None) -> Remote:
    """The server to talk to: options, then environment variables, then the config file."""
    config = _config()
    chosen_token = token or os.environ.get("UNVEIL_TOKEN") or config.get("token")
    if not chosen_token:
        raise click.UsageError(
            "no token: pass --token, set UNVEIL_TOKEN or put token in the config file"
        )
    return Remote(
        url or os.environ.get("UNVEIL_URL") or config.get("url") or DEFAULT_URL,
        chosen_token,
        project or os.environ.get("UNVEIL_PROJECT") or config.get("project") or DEFAULT_PROJECT,
    )


def remote_options(command: Any) -> Any:
    """The --url, --token and --project options, resolved into a ``Remote``."""

    def wrapper(url: str | None, token: str | None, project: str | None, **kwargs: Any) -> Any:
        return command(resolve_remote(url, token, project), **kwargs)

    wrapper.__name__ = command.__name__
    wrapper.__doc__ = command.__doc__
    for option in (
        click.option(
            "--project",
            "-p",
            default=None,
            help=f"The project (or UNVEIL_PROJECT; default '{DEFAULT_PROJECT}').",
        ),
        click.option("--token", default=None, help="An admin token (or UNVEIL_TOKEN)."),
        click.option("--url", default=None, help=f"The server (default {DEFAULT_URL})."),
    ):
        wrapper = option(wrapper)
    return wrapper
