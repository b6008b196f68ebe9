"""The web UI of `tuneforge ui`: static HTML, CSS and JavaScript (no build step, no network assets) served by the
same FastAPI app as `tuneforge serve`, and a client of its HTTP API only (see docs/ui.md)."""
