"""BTLM: GPT-2-style decoder with SwiGLU, ALiBi and muP, in the Hugging Face BTLM layout."""

from model.btlm import BTLMLMHeadModel
from model.config import BTLMConfig, ModelConfigError
from model.hf_checkpoint import CheckpointError
from model.modeling import CausalLMOutput

__all__ = ["BTLMConfig", "BTLMLMHeadModel", "CausalLMOutput", "CheckpointError", "ModelConfigError"]
