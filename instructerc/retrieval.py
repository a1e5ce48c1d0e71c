"""Demonstration retrieval (issue 3): being written; only the CLI options exist so far."""


def add_arguments(parser) -> None:
    g = parser.add_argument_group("demonstration retrieval")
    g.add_argument("--demonstrations", type=int, default=0, metavar="K",
                   help="retrieved training demonstrations per ERC prompt (0: none)")
