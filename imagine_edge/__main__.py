"""``python -m imagine_edge`` runs the command-line interface."""

from imagine_edge.cli import main

raise SystemExit(main())
