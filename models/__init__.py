"""Infrared small-target detectors (SD2Net, STD2Net, LRRNet) and everything around them."""

from models.registry import MODEL_INFO, ModelInfo, build_model, load_model, model_info

__all__ = ["MODEL_INFO", "ModelInfo", "build_model", "load_model", "model_info"]
