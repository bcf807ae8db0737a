"""Shared test fixtures: a deterministic VAD and the real server on a loopback port."""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams


class EnergyVAD(VADAnalyzer):
    """Speech = RMS above a threshold. Silero does not fire on synthetic tones, and tests of
    turn-taking must not depend on a model's judgement; this keeps them exact."""

    THRESHOLD = 1000.0

    def __init__(self, sample_rate: int | None = None, params: VADParams | None = None) -> None:
        super().__init__(
            sample_rate=sample_rate,
            params=params or VADParams(start_secs=0.1, stop_secs=0.2, confidence=0.5),
        )

    def num_frames_required(self) -> int:
        return int(self.sample_rate * 0.02) if self.sample_rate else 160

    def voice_confidence(self, buffer: bytes) -> float:
        samples = np.frombuffer(buffer, np.int16).astype(np.float32)
        if samples.size == 0:
            return 0.0
        return 1.0 if float(np.sqrt(np.mean(samples * samples))) > self.THRESHOLD else 0.0


def energy_vad_factory(sample_rate: int) -> EnergyVAD:
    return EnergyVAD(sample_rate=sample_rate)


@pytest.fixture(autouse=True)
def _private_caches(tmp_path_factory, monkeypatch):
    """Keep tests out of ~/.cache: holding phrases and model-hash caches go to a temp dir."""
    cache = tmp_path_factory.getbasetemp() / "bot-cache"
    monkeypatch.setenv("HOLDING_CACHE_DIR", str(cache / "phrases"))
    monkeypatch.setenv("EXOTEL_BOT_CACHE_DIR", str(cache))


# Files whose tests load the offline speech models without the ``models`` mark (the demo runs
# them in its own server process).
OFFLINE_MODEL_FILES = {"test_demo.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's ``--dist loadgroup`` (how ``make test`` runs): each file is
    one group, as with ``loadfile``, except the tests that run the offline models, which share
    one group and so run one after another on one worker. Most tests wait on audio played at
    real time, but two Whisper transcriptions at once on 2 cores can take a call past its
    4 s fault timeout."""
    for item in items:
        heavy = item.get_closest_marker("models") or item.path.name in OFFLINE_MODEL_FILES
        group = "offline-models" if heavy else str(item.path)
        item.add_marker(pytest.mark.xdist_group(group))
