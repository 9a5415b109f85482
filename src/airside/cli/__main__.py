"""``python -m airside.cli``: the same as the ``airside`` command."""

from airside.cli.main import app

if __name__ == "__main__":
    app(prog_name="airside")
