"""The processor: the chat template is the one prompt source; conditioning fields are validated."""

import pytest

from m2mv.data.taxonomy import load_mv_types


def test_prompt_is_the_papers_template(tiny):
    _, processor = tiny
    prompt = processor.build_prompt(genre_tags=["rock", " indie  pop"], mv_type="artistic/abstract",
                                    lyrics_understanding="A song about\nleaving home.")
    assert prompt == (
        "### Human: <Audio><|audio|></Audio> Genre tags: rock, indie pop. MV type: Artistic/Abstract. "
        "Lyrics understanding: A song about leaving home. " + processor.instructions["mv_description"]
        + "\n### Assistant:"
    )
    assert processor.build_prompt("captioning") == (
        "### Human: <Audio><|audio|></Audio> generate a caption\n### Assistant:")


def test_apply_chat_template_directly_gives_the_same_prompt(tiny):
    _, processor = tiny
    messages = processor.build_messages(mv_type="Animation")
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == processor.build_prompt(
        mv_type="Animation")
    assert "MV type" in processor.chat_template  # the template lives in the processor


def test_each_conditioning_switch_is_optional(tiny):
    _, processor = tiny
    assert "Genre tags" not in processor.build_prompt(mv_type="Animation")
    assert "MV type" not in processor.build_prompt(genre_tags=["pop"])
    assert "Lyrics" not in processor.build_prompt()


def test_unknown_mv_type_lists_the_taxonomy(tiny):
    _, processor = tiny
    with pytest.raises(ValueError) as err:
        processor.build_prompt(mv_type="Opera Night")
    assert "unknown MV type 'Opera Night'" in str(err.value)
    assert all(name in str(err.value) for name in load_mv_types())


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("genre_tags", "rock", "list of non-empty strings"),
        ("genre_tags", ["rock", ""], "list of non-empty strings"),
        ("genre_tags", ["rock", 3], "list of non-empty strings"),
        ("mv_type", "", "non-empty string"),
        ("mv_type", 7, "non-empty string"),
        ("lyrics_understanding", "   ", "non-empty string"),
        ("lyrics_understanding", ["a"], "non-empty string"),
    ],
)
def test_malformed_conditioning_fields_are_errors(tiny, field, value, message):
    _, processor = tiny
    with pytest.raises(ValueError, match=message):
        processor.build_prompt(**{field: value})


def test_unknown_task_and_placeholder_misuse(tiny, music_like):
    _, processor = tiny
    with pytest.raises(ValueError, match="unknown task"):
        processor.build_prompt("translate")
    with pytest.raises(ValueError, match="placeholders"):
        processor(text=["no placeholder here"], audio=[music_like[0]], sampling_rate=16000)
    with pytest.raises(ValueError, match="placeholders"):
        processor(text=[processor.build_prompt()])  # a placeholder but no audio
    with pytest.raises(ValueError, match="answers"):
        processor(text=[processor.build_prompt()] * 2, audio=[music_like[0]] * 2, sampling_rate=16000,
                  answers=["one"])


def test_parse_back_generated_text(tiny):
    _, processor = tiny
    parsed = processor.post_process_mv_description(["Overview: a.\nFrames:\n[00:00-00:02] b\n###"], 2.0)[0]
    assert parsed.is_valid and parsed.frames[0].text == "b"
