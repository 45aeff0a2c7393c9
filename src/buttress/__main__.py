"""``python -m buttress``: the same as the ``buttress`` command."""

from ._cli import main

raise SystemExit(main())
