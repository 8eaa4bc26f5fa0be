"""Console entries `tr2m-serve` and `tr2m-batch`: one-line errors, exit 2 for bad input, 130 on
Ctrl-C. Their modules (and Ray) load only when the command runs."""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence


def _run(load_command: Callable[[], object], prog: str, argv: Optional[Sequence[str]]) -> int:
    import click

    from ..errors import Tr2mRuntimeError

    try:
        command = load_command()
        code = command.main(args=list(argv) if argv is not None else None, prog_name=prog, standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        print("interrupted", file=sys.stderr)
        return 130
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return 2
    except Tr2mRuntimeError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    return code if isinstance(code, int) else 0


def _serve_command():
    from .serve_cli import command

    return command


def _batch_command():
    from .batch_cli import command

    return command


def serve_main(argv: Optional[Sequence[str]] = None) -> int:
    return _run(_serve_command, "tr2m-serve", argv)


def batch_main(argv: Optional[Sequence[str]] = None) -> int:
    return _run(_batch_command, "tr2m-batch", argv)
