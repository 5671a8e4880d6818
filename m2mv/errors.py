"""The project's errors: each names the file (or row, or option) and the problem, in one line.

Every ``m2mv`` command catches :class:`M2MVError` (and the known errors of bad input: ``ValueError``, ``OSError``)
and prints that line instead of a traceback (``--debug`` shows it). The remote-code files define their own
(``AudioInputError`` in ``feature_extraction_m2mv.py``, a ``ValueError``), since they must stay self-contained.
"""


class M2MVError(Exception):
    """Base of m2mv's errors: the message names what was wrong and where."""


class DatasetError(M2MVError, ValueError):
    """Bad dataset input (a missing folder, split or column, a malformed row); names the file and row."""


class StaleEmbeddingsError(DatasetError):
    """Precomputed audio embeddings that do not belong to the model's audio encoder (or do not cover the data)."""


class CheckpointError(M2MVError, ValueError):
    """A checkpoint that cannot be read or converted: missing, truncated, or with missing/unexpected/mis-shaped
    keys; names the file."""


class TrainingError(M2MVError, ValueError):
    """Bad training input (config, paths, dataset, embeddings): raised before any training step runs."""


class BenchmarkError(M2MVError, ValueError):
    """A benchmark that cannot run: missing or wrong model folder or dataset, stale predictions. Names the path."""


class UsageError(M2MVError, ValueError):
    """Command-line options that conflict or are missing (``--tiny`` with ``--imagebind``...)."""


class CorpusError(M2MVError, RuntimeError):
    """A demo-corpus build step failed (a package, a renderer, a track); names the package and file."""


class VideoError(M2MVError, ValueError):
    """A music video that cannot be used: unreadable, truncated, no audio or video stream; names the file."""


class PipelineError(M2MVError, ValueError):
    """A dataset-pipeline step that failed for one song (clip not found, a reply that never parsed, a server that
    is down); names the song, the file or the URL."""


class LyricsError(M2MVError, ValueError):
    """Lyrics that cannot be used: a missing file, LRC that is malformed, out of time order or past the song's
    end; names the file and line."""
