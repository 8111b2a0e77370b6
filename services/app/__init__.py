"""One FastAPI codebase, run as app-a, app-b and app-c (see services/README.md)."""
