"""The `tr2m-run` console entry: Ctrl-C while the CLI's libraries import exits 130 quietly."""
import sys


def main() -> int:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return cli_main()
