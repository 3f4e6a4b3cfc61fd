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

__all__ = ["DEFAULT_URL", "Remote", "RemoteError", "remote_options", "resolve_remote"]

DEFAULT_URL = "http://127.0.0.1:8400"


def _config() -> dict[str, Any]:
    path = Path(os.environ.get("UNVEIL_CONFIG", "~/.config/unveil/config.toml")).expanduser()
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None


class RemoteError(click.ClickException):
    """The server said no: its status, message and any problems, for people."""

    exit_code = 1

    def __init__(self, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500]}
        lines = [f"{response.status_code}: {body.get('error', 'request failed')}"]
        lines += [f"  {p.get('path')}: {p.get('message')}" for p in body.get("problems", [])]
        super().__init__("\n".join(lines))
        self.status = response.status_code


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
        ok: tuple[int, ...] = (200, 201, 204),
        **kwargs: Any,
    ) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise click.ClickException(f"cannot reach {self.url}: {exc}") from None
        if response.status_code not in ok:
            raise RemoteError(response)
        return response


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
        project or os.environ.get("UNVEIL_PROJECT") or config.get("project") or "default",
    )


def remote_options(command: Any) -> Any:
    """The --url, --token and --project options, resolved into a ``Remote``."""

    def wrapper(url: str | None, token: str | None, project: str | None, **kwargs: Any) -> Any:
        return command(resolve_remote(url, token, project), **kwargs)

    wrapper.__name__ = command.__name__
    wrapper.__doc__ = command.__doc__
    for option in (
        click.option("--project", "-p", default=None, help="The project (default: 'default')."),
        click.option("--token", default=None, help="An admin token (or UNVEIL_TOKEN)."),
        click.option("--url", default=None, help=f"The server (default {DEFAULT_URL})."),
    ):
        wrapper = option(wrapper)
    return wrapper
