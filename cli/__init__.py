"""The ``irtrack`` command: every subcommand of the project in one place, on top of the rest."""
