"""The web app: ``m2mv app`` (and the Spaces ``app.py``) serve a Gradio page that describes an uploaded song and
draws its music video as a timeline. Needs the ``app`` extra (Gradio, matplotlib).

``ServeOptions`` imports nothing heavy; the page itself (``M2MVApp``, ``launch``, ``serve``) is imported on first use,
so the CLI can read the options' defaults without loading transformers.
"""

from m2mv.app.options import ServeOptions

__all__ = ["M2MVApp", "ServeOptions", "launch", "serve"]


def __getattr__(name: str):
    if name in ("M2MVApp", "launch", "serve"):
        from m2mv.app import blocks

        return getattr(blocks, name)
    raise AttributeError(f"module 'm2mv.app' has no attribute {name!r}")
