"""CLI verbs: each module has add_parser(subparsers, help) and run(args)."""
