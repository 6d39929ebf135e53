"""``python -m services`` runs the shoplens CLI."""

from services.cli import main

main()
