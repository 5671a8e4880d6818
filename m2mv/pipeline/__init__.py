"""The dataset-construction pipeline: from music videos to m2mv's training data (the paper's other half).

Per song: locate the music clip in the video's soundtrack (:mod:`~m2mv.pipeline.align`), take one frame per 2-s
window and count the scene cuts (:mod:`~m2mv.pipeline.video`), caption each frame with a vision-language model
and merge the captions into an MV description with an LLM (:mod:`~m2mv.pipeline.models`,
:mod:`~m2mv.pipeline.merge`), choose the MV type (:mod:`~m2mv.pipeline.mv_type`) and write a lyrics understanding
(:mod:`~m2mv.pipeline.lyrics`). The prompts live in one versioned place (:mod:`~m2mv.pipeline.prompts`); every step
keeps resumable per-song records (:mod:`~m2mv.pipeline.records`). ``dataset_scripts/music_videos.py`` runs it over
a folder of videos (or Music4All) and writes both dataset configs.

It imports the data layer and the remote-code MV format, nothing above them.
"""
