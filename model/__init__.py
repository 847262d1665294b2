"""BTLM: GPT-2-style decoder with SwiGLU, ALiBi and muP, in the Hugging Face BTLM layout."""

from model.checkpoint.published import CheckpointError
from model.config import BTLMConfig, ModelConfigError
from model.network import BTLMLMHeadModel, CausalLMOutput

__all__ = ["BTLMConfig", "BTLMLMHeadModel", "CausalLMOutput", "CheckpointError", "ModelConfigError"]
