"""The web app: ``m2mv app`` (and the Spaces ``app.py``) serve a Gradio page that describes an uploaded song and
draws its music video as a timeline. Needs the ``app`` extra (Gradio, matplotlib)."""

from m2mv.app.blocks import M2MVApp, launch, serve

__all__ = ["M2MVApp", "launch", "serve"]
