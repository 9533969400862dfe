"""The three policy models of Orbit Pilot and the Mamba block they rely on.

    Strategist (1 Hz)  per-second summaries -> mode logits + goal embedding       models/strategist.py
    Tactician (10 Hz)  tracked objects + goal -> target logits (+ "none") + approach  models/tactician.py
    Executor (frames)  frame + goal + target + approach -> mouse, click, key (Mamba)  models/executor.py

Save and load any of them with `models.io.save_model` / `models.io.load_model` (safetensors + config.json).
This package imports nothing from the rest of the project; optional CUDA kernels load in models/kernels.py.
"""

from models.errors import CheckpointError, ConfigError, KernelUnavailableError, ModelsError
from models.executor import Executor, ExecutorAction, ExecutorConfig, ExecutorOutput, ExecutorState
from models.io import load_model, save_model
from models.mamba import MambaBlock, MambaConfig, MambaState
from models.scan import selective_scan
from models.strategist import MODES, Strategist, StrategistCache, StrategistConfig, StrategistOutput
from models.tactician import Tactician, TacticianConfig, TacticianOutput

__all__ = [
    "MODES",
    "CheckpointError",
    "ConfigError",
    "Executor",
    "ExecutorAction",
    "ExecutorConfig",
    "ExecutorOutput",
    "ExecutorState",
    "KernelUnavailableError",
    "MambaBlock",
    "MambaConfig",
    "MambaState",
    "ModelsError",
    "Strategist",
    "StrategistCache",
    "StrategistConfig",
    "StrategistOutput",
    "Tactician",
    "TacticianConfig",
    "TacticianOutput",
    "load_model",
    "save_model",
    "selective_scan",
]
