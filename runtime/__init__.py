"""Runtime: torch-free TR2M inference (engines, tokenizer, caption cache, video loop).

    from runtime import Engine
    engine = Engine.open("bundles/paper")
    depth = engine.predict(rgb_frame, caption="an office")   # float32 [H, W], metres
"""
from .bundle import Bundle
from .engine import Engine, Prediction
from .errors import Tr2mRuntimeError

__all__ = ["Bundle", "Engine", "Prediction", "Tr2mRuntimeError"]
