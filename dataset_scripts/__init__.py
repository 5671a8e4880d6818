"""Dataset building scripts for m2mv (demo corpus from Debian packages, audio analysis)."""
