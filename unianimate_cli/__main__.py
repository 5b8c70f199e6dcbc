"""`python -m unianimate_cli`: the same app as the `unianimate` command."""

from unianimate_cli.cli import main

if __name__ == "__main__":
    main()
