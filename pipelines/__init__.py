"""Entry points: each module has ``run(argv=None)`` and a build step; no algorithms here."""
