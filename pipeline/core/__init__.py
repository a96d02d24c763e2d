"""Plumbing every stage uses: errors and IO helpers, the registry, parameters, config validation, the results layout, launch commands. Imports no stage package."""
