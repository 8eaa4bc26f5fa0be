"""Runtime: torch-free TR2M inference (engines, tokenizer, caption cache, video loop).

    from runtime import Engine
    engine = Engine.open("bundles/paper")
    depth = engine.predict(rgb_frame, caption="an office")   # float32 [H, W], metres

The names below load on first use, so that `tr2m-run` can answer Ctrl-C cleanly while its
libraries (ONNX Runtime, OpenCV, PyAV) are still importing.
"""

__all__ = ["Bundle", "Engine", "Prediction", "Tr2mRuntimeError"]


def __getattr__(name):
    if name in ("Engine", "Prediction"):
        from . import engine
        return getattr(engine, name)
    if name == "Bundle":
        from .bundle import Bundle
        return Bundle
    if name == "Tr2mRuntimeError":
        from .errors import Tr2mRuntimeError
        return Tr2mRuntimeError
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
