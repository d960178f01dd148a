"""Real models for the package's recipes and diagnostics: GGUF / HF directory -> a plain HF directory veRL loads.

``python -m verl_resrl.models convert smollm2-135m-instruct`` prints the converted directory (cached).
"""

from verl_resrl.models.convert import ASSETS, asset_gguf, convert_gguf, prepare_model_dir

__all__ = ["ASSETS", "asset_gguf", "convert_gguf", "prepare_model_dir"]
