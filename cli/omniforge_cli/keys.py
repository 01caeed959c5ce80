"""`omniforge keys create | list | revoke`: API keys, in the registry this machine is configured for."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from .context import console, fail, open_registry

app = typer.Typer(help="API keys: only their salted hashes are stored.", no_args_is_help=True)


def _store():
    from omniforge_shared.keys import KeyStore

    return KeyStore(open_registry())


@app.command("create")
def create(name: str = typer.Option(..., help="who or what uses the key"),
           scope: list[str] = typer.Option(["inference"], "--scope", help="inference | training | admin, repeatable"),
           rate_limit: Optional[int] = typer.Option(None, help="requests a minute (default: the gateway's)"),
           quota_per_day: Optional[int] = typer.Option(None, help="requests a day (default: the gateway's)")):
    """Creates a key and prints it once: it is not stored and cannot be shown again."""
    from omniforge_shared.keys import InvalidKeyRequest

    try:
        view, key = _store().create(name=name, scopes=scope, rate_limit_per_minute=rate_limit,
                                    quota_per_day=quota_per_day)
    except InvalidKeyRequest as e:
        fail(str(e))
    console.print(f"key [bold]{view.id}[/bold] ({view.name}; {', '.join(view.scopes)}): store it now, "
                  "it is not shown again")
    print(key)


@app.command("list")
def list_keys(all_: bool = typer.Option(False, "--all", help="revoked keys too")):
    table = Table("id", "name", "scopes", "rate/min", "quota/day", "created", "last used", "revoked")
    for v in _store().list(include_revoked=all_):
        table.add_row(v.id, v.name, ",".join(v.scopes), str(v.rate_limit_per_minute or "default"),
                      str(v.quota_per_day or "default"), f"{v.created_at:%Y-%m-%d %H:%M}",
                      f"{v.last_used_at:%Y-%m-%d %H:%M}" if v.last_used_at else "-",
                      f"{v.revoked_at:%Y-%m-%d %H:%M}" if v.revoked_at else "")
    console.print(table)


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="the key's id (`omniforge keys list`)")):
    """Revokes a key; gateways refuse it within 10 seconds."""
    from omniforge_shared.keys import InvalidKeyRequest

    try:
        view = _store().revoke(key_id)
    except InvalidKeyRequest as e:
        fail(str(e))
    console.print(f"revoked {view.id} ({view.name})")
