"""The playground: TensorFlow Playground's page on a real registry model, trained by the
server's training jobs and watched live by any number of pages (docs/playground.md).

data.py (the data sets and input features), settings.py (the controls, checked, and the
model spec they make), sessions.py (one shared session per model: its data, epoch,
history and jobs), frames.py (what a page draws), routes.py (the HTTP API and SSE on the
REST port), static/ (the page: no build step).
"""

from .sessions import Playground, Session

__all__ = ["Playground", "Session"]
