"""Jupyter commands: `kupdate kernel install | list | remove`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kupdate.cli.output import emit_json

kernel_app = typer.Typer(
    help="Jupyter kernels that start with a knowledge base opened as `kb` and the %kupdate magics loaded.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


@kernel_app.command("install")
def install(
    kb: Annotated[Path | None, typer.Option("--kb", help="Knowledge base the kernel opens (default: $KUPDATE_KB, else ~/.local/share/kupdate/kb).", show_default=False)] = None,
    name: Annotated[str, typer.Option(help="Kernel name (what `kernel remove` takes).")] = "kupdate",
    display_name: Annotated[str | None, typer.Option("--display-name", help="Name shown in Jupyter's launcher (default: 'kupdate (<kb folder>)').")] = None,
    user: Annotated[bool, typer.Option("--user", help="Install for this user only ($JUPYTER_DATA_DIR, else ~/.local/share/jupyter).")] = False,
    sys_prefix: Annotated[bool, typer.Option("--sys-prefix", help="Install into this Python environment (sys.prefix).")] = False,
    prefix: Annotated[Path | None, typer.Option(help="Install into PREFIX/share/jupyter/kernels.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Register a Jupyter kernel that opens a knowledge base as `kb` with the magics loaded.

    Without --user, --sys-prefix or --prefix it goes where Jupyter puts system-wide kernels.

    Example:

        kupdate kernel install --user --kb ./my-kb --name my-kb
    """
    from kupdate.jupyter import kernelspec

    if sum([user, sys_prefix, prefix is not None]) > 1:
        raise typer.BadParameter("choose one of --user, --sys-prefix and --prefix")
    where = sys.prefix if sys_prefix else prefix
    info = kernelspec.install(kb, name=name, display_name=display_name, user=user, prefix=where)
    if json_:
        emit_json(info.to_dict())
    else:
        typer.echo(f"Installed kernel {info.name!r} ({info.display_name}) in {info.path}, opening {info.kb}.")


@kernel_app.command("list")
def list_(json_: JsonOpt = False) -> None:
    """List the kupdate kernels Jupyter can see, with the knowledge base each opens.

    Example:

        kupdate kernel list --json
    """
    from kupdate.jupyter import kernelspec

    kernels = kernelspec.list_kernels()
    if json_:
        emit_json([k.to_dict() for k in kernels])
        return
    if not kernels:
        typer.echo("No kupdate kernels installed; add one with `kupdate kernel install --user`.", err=True)
    for k in kernels:
        typer.echo(f"{k.name}\t{k.kb}\t{k.path}")


@kernel_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="Kernel name, as `kernel list` shows it.")]) -> None:
    """Unregister a kupdate kernel (the knowledge base itself is left alone).

    Example:

        kupdate kernel remove my-kb
    """
    from kupdate.jupyter import kernelspec

    info = kernelspec.remove(name)
    typer.echo(f"Removed kernel {info.name!r} from {info.path}.")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.add_typer(kernel_app, name="kernel")
