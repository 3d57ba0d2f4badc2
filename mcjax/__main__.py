"""``python -m mcjax`` runs the ``mcjax`` command."""

from mcjax._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
