"""The web app in the Hugging Face Spaces convention: ``python app.py`` serves the same page as ``m2mv app``.

The checkpoint is ``$M2MV_MODEL``: a folder, or a Hub repository id (downloaded with ``snapshot_download``); unset,
m2mv's demo checkpoint. It binds to ``$GRADIO_SERVER_NAME`` (a Space sets 0.0.0.0) or 127.0.0.1, on
``$GRADIO_SERVER_PORT`` or 7860. docs/app.md has the Space's README block.
"""

import os
from pathlib import Path

from m2mv.app import ServeOptions, launch


def model_folder() -> str | None:
    """``$M2MV_MODEL`` as a local folder: itself when it exists, else a Hub repository downloaded once."""
    model = os.environ.get("M2MV_MODEL")
    if not model or Path(model).expanduser().exists():
        return model or None
    from huggingface_hub import snapshot_download

    return snapshot_download(model)


if __name__ == "__main__":
    options = ServeOptions(host=os.environ.get("GRADIO_SERVER_NAME", ServeOptions.host),
                           port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    launch(model_folder(), options)
