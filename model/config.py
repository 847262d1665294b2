"""BTLMConfig: the model's hyperparameters under the Hugging Face BTLM field names.

One dataclass serves three formats, all read by the project's one typed loader
(common.config: an unknown key or a wrong type is an error naming the key and the
file): YAML files in configs/model/ (which may extend a ``base:`` file), the Hugging
Face ``config.json`` of a checkpoint, and plain dicts. Variant switches (rotary /
learned positions, no biases, untied output embeddings) let the same code build a
StableLM-3B-4E1T-style model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import write_text
from common.config import ConfigError, from_dict, load_config

POSITION_TYPES = ("alibi", "rope", "learned")
ACTIVATIONS = ("swiglu", "gelu_new")

# Keys the Hugging Face config machinery writes into config.json that carry no model
# hyperparameter; they are accepted and dropped when reading a checkpoint.
HF_BOOKKEEPING_KEYS = frozenset(
    {
        "_name_or_path",
        "architectures",
        "auto_map",
        "model_type",
        "torch_dtype",
        "dtype",
        "transformers_version",
        "pad_token_id",
        "n_ctx",
    }
)


class ModelConfigError(ConfigError):
    """A model config file or override is invalid; the message names the key and file."""


@dataclass
class BTLMConfig:
    vocab_size: int = 50257
    n_positions: int = 8192
    n_embd: int = 2560
    n_layer: int = 32
    n_head: int = 32
    # None = derived: 8/3 * n_embd (rounded down) for swiglu, 4 * n_embd otherwise.
    n_inner: int | None = None
    activation_function: str = "swiglu"
    position_embedding_type: str = "alibi"
    # Linear ALiBi scaling: None, {"type": "linear", "factor": F} or
    # {"type": "linear", "train_seq_len": N}.
    alibi_scaling: dict[str, Any] | None = None
    # Rotary settings (position_embedding_type == "rope").
    rotary_pct: float = 0.25
    rotary_base: float = 10000.0
    # False = no biases in the attention and MLP linears (StableLM); LayerNorms keep theirs.
    use_bias: bool = True
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    resid_pdrop: float = 0.0
    embd_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    # muP. mup_width_scale = base width / width; with mup_base_width set it is derived
    # from n_embd, so overriding the width rescales the model consistently.
    mup_base_width: int | None = None
    mup_width_scale: float | None = None
    mup_embeddings_scale: float = 1.0
    mup_output_alpha: float = 1.0
    mup_scale_qk_dot_by_d: bool = False
    tie_word_embeddings: bool = True
    use_cache: bool = True
    bos_token_id: int = 50256
    eos_token_id: int = 50256

    def __post_init__(self) -> None:
        if self.n_inner is None:
            self.n_inner = int(self.n_embd * 8 / 3) if self.activation_function == "swiglu" else 4 * self.n_embd
        derived = None if self.mup_base_width is None else self.mup_base_width / self.n_embd
        if self.mup_width_scale is None:
            self.mup_width_scale = 1.0 if derived is None else derived
        elif derived is not None and not math.isclose(self.mup_width_scale, derived, rel_tol=1e-9):
            raise ValueError(
                f"mup_width_scale={self.mup_width_scale} contradicts mup_base_width/n_embd = "
                f"{self.mup_base_width}/{self.n_embd} = {derived}; give only one of them"
            )
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0, f"{name} must be a positive integer")
        need(self.n_embd % self.n_head == 0, f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        need(self.position_embedding_type in POSITION_TYPES,
             f"position_embedding_type must be one of {list(POSITION_TYPES)}, got {self.position_embedding_type!r}")
        need(self.activation_function in ACTIVATIONS,
             f"activation_function must be one of {list(ACTIVATIONS)}, got {self.activation_function!r}")
        need(not self.scale_attn_by_inverse_layer_idx, "scale_attn_by_inverse_layer_idx=true is not supported")
        need(not self.reorder_and_upcast_attn, "reorder_and_upcast_attn=true is not supported")
        need(self.mup_width_scale > 0, "mup_width_scale must be positive")
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            need(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1)")
        if self.position_embedding_type == "rope":
            rotary_dim = self.rotary_dim
            need(0 < rotary_dim <= self.head_dim and rotary_dim % 2 == 0,
                 f"rotary_pct={self.rotary_pct} gives rotary_dim={rotary_dim}; it must be even and in (0, head_dim]")
        if self.alibi_scaling is not None:
            # The rules of the published configuration_btlm.py (an integer factor, a float
            # train_seq_len or a factor <= 1 are rejected there too), plus: no unknown keys.
            s = self.alibi_scaling
            need(isinstance(s, dict) and len(s) == 2 and set(s) in ({"type", "factor"}, {"type", "train_seq_len"}),
                 f"alibi_scaling must be {{type: linear, factor: F}} or {{type: linear, train_seq_len: N}}, got {s!r}")
            need(s["type"] == "linear", f"alibi_scaling type must be 'linear', got {s['type']!r}")
            if "factor" in s:
                need(isinstance(s["factor"], float) and s["factor"] > 1.0,
                     f"alibi_scaling factor must be a float > 1.0, got {s['factor']!r}")
            else:
                need(isinstance(s["train_seq_len"], int) and not isinstance(s["train_seq_len"], bool)
                     and s["train_seq_len"] > 1,
                     f"alibi_scaling train_seq_len must be an integer > 1, got {s['train_seq_len']!r}")

    # --- derived quantities -------------------------------------------------------

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_pct)

    @property
    def mup_width_multiplier(self) -> float:
        """m = width / base width (1 under standard parameterization)."""
        return 1.0 / self.mup_width_scale

    # The multipliers the forward pass applies. Every format that cannot carry them (native
    # StableLM, llama.cpp's graphs) folds these same values into its weights.

    @property
    def attention_scale(self) -> float:
        """Multiplier of q.k: 1/d_head under muP (keeps logits O(1) as heads widen), else 1/sqrt(d_head)."""
        if not self.scale_attn_weights:
            return 1.0
        if self.mup_scale_qk_dot_by_d:
            return 1.0 / self.head_dim
        return self.head_dim**-0.5

    @property
    def embedding_scale(self) -> float:
        """Multiplier of the token (and position) embeddings (muP's input alpha)."""
        return self.mup_embeddings_scale

    @property
    def output_logits_scale(self) -> float:
        """muP readout multiplier of the logits: output alpha / width multiplier (1 under standard parameterization)."""
        return self.mup_output_alpha * self.mup_width_scale

    # --- serialisation ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json content of a Hugging Face BTLM checkpoint."""
        return {"model_type": "btlm", "architectures": ["BTLMLMHeadModel"], **self.to_dict()}

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_hf_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "<dict>") -> "BTLMConfig":
        try:
            return from_dict(cls, data, origin)
        except ConfigError as exc:
            raise ModelConfigError(str(exc)) from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> "BTLMConfig":
        try:
            return load_config(cls, path, overrides or {})
        except ConfigError as exc:
            raise ModelConfigError(str(exc).replace("config file", "model config", 1)) from None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "BTLMConfig":
        """Read a Hugging Face config.json (bookkeeping keys such as architectures dropped)."""
        path = Path(path)
        data = read_json_object(path)
        model_type = data.get("model_type", "btlm")
        if model_type != "btlm":
            raise ModelConfigError(f"{path}: model_type is {model_type!r}, expected 'btlm'")
        return cls.from_dict({k: v for k, v in data.items() if k not in HF_BOOKKEEPING_KEYS}, str(path))


def read_json_object(path: Path) -> dict[str, Any]:
    """A model config.json as a dict, or a ModelConfigError that names the file and what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelConfigError(f"model config {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path}: top level must be a JSON object")
    return data
