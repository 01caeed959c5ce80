"""`omniforge`: run the local stack, manage models and datasets, train and export."""
from __future__ import annotations

import sys

import typer

from omniforge_shared.settings import ConfigError

from . import data, evaluate, export, jobs, keys, models, stack, train
from .context import err

app = typer.Typer(help="omniforge: build, train and serve your own multimodal models.", no_args_is_help=True)
stack.register(app)
models.register(app)
jobs.register(app)
app.add_typer(models.app, name="models")
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(export.app, name="export")
app.add_typer(evaluate.app, name="eval")
app.add_typer(keys.app, name="keys")


def main() -> None:
    try:
        app()
    except ConfigError as e:
        err.print(str(e))
        sys.exit(2)


if __name__ == "__main__":
    main()
