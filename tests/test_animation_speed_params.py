"""Speed and memory settings of animate/extend: what reaches the sampler, what is refused."""

from __future__ import annotations

import pytest

from unianimate_cli.animation import AnimateParams
from unianimate_cli.errors import InputError


def test_guidance_batching_sampler_and_low_memory_reach_the_sampler() -> None:
    assert AnimateParams().render_params().batch_guidance is None  # auto: chosen from free memory
    assert AnimateParams(batch_guidance="on").render_params().batch_guidance is True
    assert AnimateParams(batch_guidance="off").render_params().batch_guidance is False
    assert AnimateParams(batch_guidance="on", low_memory=True).render_params().batch_guidance is False
    assert AnimateParams(sampler="dpm++2m").render_params().sampler == "dpm++2m"


def test_only_the_sampler_changes_the_partial_files_key() -> None:
    base = AnimateParams().output_key()
    assert "sampler" not in base  # DDIM keys stay as before: earlier partial files remain valid
    assert AnimateParams(low_memory=True, compile=True, batch_guidance="off", decode_chunk_frames=4).output_key() == base
    assert AnimateParams(sampler="dpm++2m").output_key() == {**base, "sampler": "dpm++2m"}


@pytest.mark.parametrize(
    "changes, message",
    [({"sampler": "euler"}, "sampler"), ({"batch_guidance": "yes"}, "batch guidance"), ({"decode_chunk_frames": -1}, "decode chunk")],
)
def test_bad_speed_settings_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        AnimateParams(**changes).validate()
