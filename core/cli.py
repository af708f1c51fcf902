"""What the `curate` and `train` command lines share: one error contract for every command.

`App` is a Typer whose commands all run under `reported`: a `core.errors.UserError` prints
`error: <message>` and exits 1, a `ParamsError` prints `error in params: <message>` and exits 2,
a missing input file exits 1 the same way; anything else is a bug and keeps its traceback. A
command never lists the errors its stage may raise, so a new one cannot be forgotten.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from core.console import console
from core.errors import UserError


@contextmanager
def reported() -> Iterator[None]:
    """Turn user errors into one red line and the contract's exit status."""
    try:
        yield
    except UserError as exc:
        console.print(f"[red]{exc.label}:[/] {exc}")
        raise typer.Exit(exc.exit_code) from exc
    except FileNotFoundError as exc:  # an input file the command was pointed at
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


class App(typer.Typer):
    """A Typer whose every command runs under `reported`."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        register = super().command(*args, **kwargs)

        def decorate(fn: Callable[..., Any]) -> Any:
            @functools.wraps(fn)
            def run(*a: Any, **kw: Any) -> Any:
                with reported():
                    return fn(*a, **kw)

            register(run)
            return fn

        return decorate
