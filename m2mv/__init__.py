"""m2mv: music in, a music-video description out.

The model itself lives in the top-level remote-code files (``configuration_m2mv``, ``modeling_m2mv``,
``processing_m2mv``) that travel with every checkpoint; this package holds the tools around it: the MV-type
taxonomy, the checkpoint converter and the command line.
"""

from m2mv.taxonomy import load_mv_types

__version__ = "0.1.0"

__all__ = ["load_mv_types", "__version__"]
