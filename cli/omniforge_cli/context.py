"""What every command group needs: the consoles, failing with a message, the registry and
the gateway client."""
from __future__ import annotations

import os

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1):
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def open_registry():
    from omniforge_shared.registry_settings import RegistrySettings
    from omniforge_shared.settings import load_settings

    return load_settings(RegistrySettings).open()


def client():
    """The SDK client of the local gateway (or OMNIFORGE_BASE_URL)."""
    from omniforge_sdk import Client

    from .processes import gateway_url

    return Client(base_url=os.environ.get("OMNIFORGE_BASE_URL") or gateway_url())


def sdk_call(fn, *args, **kwargs):
    """Calls the SDK; an API error ends the command with its message."""
    from omniforge_sdk import OmniforgeError

    try:
        return fn(*args, **kwargs)
    except OmniforgeError as e:
        fail(str(e))
