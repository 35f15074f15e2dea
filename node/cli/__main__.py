"""``python -m node.cli``: the `appchain` command line."""

from node.cli.main import main

main()
