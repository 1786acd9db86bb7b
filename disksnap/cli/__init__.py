"""The ``disksnap`` command line: typer + rich over the SDK (``disksnap.Client``) only.

``app.py`` assembles the command groups (one module each: hosts, domains, vms, disks,
snapshots, preview, jobs, check, server, demo); ``_session.py`` holds the per-invocation
state (engine address, output format, the client); ``_errors.py`` is the one place where
exceptions become messages and exit codes; ``_render.py`` draws tables and builds the JSON
documents; ``_resolve.py`` turns names, aliases, descriptions and id prefixes into ids.
"""
