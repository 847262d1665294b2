"""transformers' BTLM causal LM: the project's BTLMLMHeadModel behind PreTrainedModel + GenerationMixin.

The wrapper owns no math. Its ``transformer`` and ``lm_head`` are the very modules of a
``BTLMLMHeadModel`` (parameter names and state dict as the project's), and ``forward``
calls that model. What it adds is transformers' side of the contract:

- caches: transformers 5.x hands ``forward`` a ``Cache`` object (``cache=``; 4.x:
  ``past_key_values=``, sometimes legacy tuples). The cached keys/values are read out as
  the project's per-layer ``(k, v)`` list, the new positions are written back with
  ``cache.update(k, v, layer)``, and ALiBi/rotary offsets come from ``get_seq_length()``;
- padding: an ``attention_mask`` with zeros (left-padded batches in ``generate``) runs
  each row on its own tokens only, so a padded row gives the logits it gives alone;
- loading: ``from_pretrained`` reads the published BTLM layout (Conv1D weights, sharded
  or not) or native StableLM through ``model.checkpoint``; ``save_pretrained`` writes it.

This module is the ``modeling_btlm.py`` of an exported folder (``python -m model.export``).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import GenerationConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from common.atomic import write_bytes
from model.checkpoint.folder import load_pretrained, parse_size, read_config, save_pretrained
from model.checkpoint.published import AUTO_MAP, GENERATION_CONFIG_NAME
from model.hf_transformers.config import BTLMHFConfig
from model.loss import lm_loss_from_logits
from model.network import BTLMLMHeadModel

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
# transformers 5 renamed the output field past_key_values to cache.
OUTPUT_CACHE_FIELD = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"
# Running as the copied remote code of an exported folder rather than as the project's module.
IS_REMOTE_CODE = not __name__.startswith("model.")
HUB_KWARGS = ("revision", "cache_dir", "token", "use_auth_token", "local_files_only", "force_download", "proxies")
IGNORED_KWARGS = ("trust_remote_code", "low_cpu_mem_usage", "attn_implementation", "_from_auto", "_from_pipeline",
                  "_commit_hash", "use_safetensors", "offload_folder", "offload_state_dict", "max_memory",
                  "key_mapping", "tp_plan", "weights_only", "use_kernels")
UNSUPPORTED_KWARGS = ("quantization_config", "gguf_file", "load_in_8bit", "load_in_4bit")


class BTLMForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = BTLMHFConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["BTLMBlock"]
    _supports_cache_class = True  # transformers 4.x: hand forward a DynamicCache
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"} if TRANSFORMERS_MAJOR >= 5 else ["lm_head.weight"]

    def __init__(self, config: BTLMHFConfig, core: BTLMLMHeadModel | None = None) -> None:
        super().__init__(config)
        # A list, so the project model is not registered a second time: its children are ours.
        self._core = [core if core is not None else BTLMLMHeadModel(config.to_project())]
        for name, child in self._core[0].named_children():
            self.add_module(name, child)
        self.post_init()

    def _init_weights(self, module) -> None:
        """Nothing to do: the project model was built with its own muP initialisation (or loaded)."""

    @property
    def core(self) -> BTLMLMHeadModel:
        """The project's model; shares every parameter with this wrapper."""
        return self._core[0]

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, value) -> None:
        self.transformer.wte = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value) -> None:
        self.lm_head = value
        self.core.lm_head = value

    def get_mup_param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups with the muP learning-rate multipliers (as ``BTLMLMHeadModel``)."""
        return self.core.get_mup_param_groups(lr, weight_decay)

    def flops_per_token(self, seq_len: int) -> float:
        return self.core.flops_per_token(seq_len)

    # --- forward -------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        cache: Cache | tuple | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | tuple | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,  # position_ids, cache_position ...: positions follow from the cache length
    ):
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("BTLMForCausalLM takes input_ids (inputs_embeds are not supported)")
        if output_attentions or output_hidden_states:
            raise ValueError("output_attentions / output_hidden_states are not supported by BTLMForCausalLM")
        cache = cache if cache is not None else past_key_values
        if use_cache is None:  # a cache only helps decoding; in training it would just hold activations
            use_cache = self.config.use_cache and not self.training
        past_len, past = read_cache(cache)
        mask = padding_mask(attention_mask, input_ids.shape, past_len)
        if mask is None:
            out = self.core(input_ids, labels=labels, past_key_values=past, use_cache=use_cache)
            logits, presents, loss = out.logits, out.past_key_values, out.loss
        else:
            logits, presents = self._forward_rows(input_ids, mask, past)
            loss = lm_loss_from_logits(logits, labels) if labels is not None else None
        new_cache = write_cache(cache, presents, past_len, self.config) if use_cache else None
        if return_dict is False or (return_dict is None and not getattr(self.config, "return_dict", True)):
            return tuple(x for x in (loss, logits, new_cache) if x is not None)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{OUTPUT_CACHE_FIELD: new_cache})

    def _forward_rows(self, input_ids, mask, past):
        """Each row on its unmasked tokens alone: logits [B, T, V] (zeros at padding) and the
        per-layer (k, v) over past + new positions with zeros at padded positions."""
        B, T = input_ids.shape
        P = 0 if past is None else past[0][0].shape[2]
        c = self.core.config
        logits = torch.zeros(B, T, c.vocab_size, device=input_ids.device, dtype=self.lm_head.weight.dtype)
        new = [[torch.zeros(B, c.n_head, T, c.head_dim, device=input_ids.device, dtype=self.lm_head.weight.dtype)
                for _ in range(2)] for _ in range(c.n_layer)]
        for b in range(B):
            keep_past, keep_new = mask[b, :P], mask[b, P:]
            ids = input_ids[b : b + 1, keep_new]
            if ids.shape[1] == 0:
                continue
            row_past = None
            if past is not None and bool(keep_past.any()):
                row_past = [(k[b : b + 1][:, :, keep_past], v[b : b + 1][:, :, keep_past]) for k, v in past]
            out = self.core(ids, past_key_values=row_past, use_cache=True)
            logits[b, keep_new] = out.logits[0].to(logits.dtype)
            for layer, (k, v) in zip(new, out.past_key_values):
                layer[0][b, :, keep_new] = k[0, :, -ids.shape[1]:].to(layer[0].dtype)
                layer[1][b, :, keep_new] = v[0, :, -ids.shape[1]:].to(layer[1].dtype)
        if past is None:
            return logits, [(k, v) for k, v in new]
        return logits, [(torch.cat((pk, k), dim=2), torch.cat((pv, v), dim=2)) for (pk, pv), (k, v) in zip(past, new)]

    @staticmethod
    def _reorder_cache(past, beam_idx):
        """Beam search: reorder a Cache in place, or legacy tuples (transformers 4.x)."""
        if isinstance(past, Cache):
            past.reorder_cache(beam_idx)
            return past
        return tuple(tuple(t.index_select(0, beam_idx.to(t.device)) for t in layer) for layer in past)

    # --- checkpoints -------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config: BTLMHFConfig | None = None, **kwargs):
        """Load a BTLM (published layout) or native StableLM folder, local or a Hub repository.

        ``dtype``/``torch_dtype``: None = float32, ``"auto"`` = as stored, a dtype or its
        name; ``device_map``: None, a device or ``"auto"`` (the GPU when there is one).
        Keyword arguments naming config fields override them, as in transformers.
        """
        if model_args:
            raise TypeError("BTLMForCausalLM.from_pretrained takes no positional model arguments")
        for key in UNSUPPORTED_KWARGS:
            if kwargs.pop(key, None):  # None, False or empty: nothing asked for
                raise ValueError(f"{key} is not supported for BTLM checkpoints")
        if (kwargs.pop("adapter_kwargs", None) or {}).get("_adapter_model_path"):
            raise ValueError("PEFT adapter folders are not loaded here: load the base model, then PeftModel.from_pretrained")
        dtype = _resolve_dtype(kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None))
        kwargs.pop("torch_dtype", None)
        device = _resolve_device(kwargs.pop("device_map", None))
        folder = _local_folder(pretrained_model_name_or_path, kwargs)
        for key in IGNORED_KWARGS:
            kwargs.pop(key, None)
        if config is None:
            config = cls.config_class.from_project(read_config(folder))
        for key in [k for k in kwargs if k in config.to_dict()]:
            setattr(config, key, kwargs.pop(key))
        if kwargs:
            warnings.warn(f"BTLMForCausalLM.from_pretrained ignores {sorted(kwargs)}", stacklevel=2)
        core = load_pretrained(BTLMLMHeadModel, folder, map_location=device, dtype=dtype, config=config.to_project())
        model = cls(config, core=core)
        model.eval()
        if (folder / GENERATION_CONFIG_NAME).is_file():
            model.generation_config = GenerationConfig.from_pretrained(str(folder))
        model.config.name_or_path = str(pretrained_model_name_or_path)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True,
                        state_dict: dict | None = None, max_shard_size: int | str = "5GB",
                        safe_serialization: bool = True, push_to_hub: bool = False, **kwargs: Any) -> None:
        """The published BTLM layout (safetensors, sharded above ``max_shard_size``); loaded as
        remote code, the code files come along so the folder stays standalone."""
        if push_to_hub:
            raise ValueError("push_to_hub is not supported: save, then upload the folder with huggingface_hub")
        if not safe_serialization:
            raise ValueError("only safetensors are written (no pickle)")
        if not is_main_process:
            return
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        source = self.core
        if state_dict is not None:
            with torch.device("meta"):
                source = BTLMLMHeadModel(self.core.config, init=False)
            source.load_state_dict(state_dict, strict=False, assign=True)
        extra = None
        if IS_REMOTE_CODE:
            for module_file in sorted(Path(__file__).parent.glob("*.py")):
                if module_file.name != "__init__.py":
                    write_bytes(directory / module_file.name, module_file.read_bytes())
            extra = {"auto_map": AUTO_MAP}
        save_pretrained(source, directory, max_shard_bytes=parse_size(max_shard_size), extra_config=extra)


# --- cache adapters -------------------------------------------------------------------------


def read_cache(cache) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
    """(cached length, the project's per-layer (k, v) list or None) of a Cache or legacy tuples."""
    if cache is None:
        return 0, None
    if isinstance(cache, Cache):
        past_len = int(cache.get_seq_length())
        if past_len == 0:
            return 0, None
        if hasattr(cache, "layers"):  # transformers >= 4.56
            pairs = [(layer.keys, layer.values) for layer in cache.layers]
        else:
            pairs = list(zip(cache.key_cache, cache.value_cache))
        # Static caches hold max_cache_len positions; only the first past_len are filled.
        return past_len, [(k[:, :, :past_len], v[:, :, :past_len]) for k, v in pairs]
    past = [(layer[0], layer[1]) for layer in cache]
    return (past[0][0].shape[2], past) if past else (0, None)


def write_cache(cache, presents, past_len: int, config) -> Cache | tuple:
    """Append the new positions of ``presents`` (past + new per layer) to the cache."""
    if cache is not None and not isinstance(cache, Cache):
        return tuple((k, v) for k, v in presents)
    if cache is None:
        try:
            cache = DynamicCache(config=config)
        except TypeError:  # transformers 4.x
            cache = DynamicCache()
    for layer, (k, v) in enumerate(presents):
        cache.update(k[:, :, past_len:], v[:, :, past_len:], layer)
    return cache


def padding_mask(attention_mask, shape: torch.Size, past_len: int) -> torch.Tensor | None:
    """The boolean [B, past + T] mask when it hides anything, else None."""
    if attention_mask is None:
        return None
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be [batch, length], got shape {tuple(attention_mask.shape)}")
    B, T = shape
    if tuple(attention_mask.shape) != (B, past_len + T):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, past_len + T)} "
                         f"({past_len} cached + {T} new positions)")
    mask = attention_mask.bool()
    return None if bool(mask.all()) else mask


# --- from_pretrained helpers -----------------------------------------------------------------


def _resolve_dtype(dtype) -> torch.dtype | str | None:
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return resolved


def _resolve_device(device_map) -> torch.device:
    if device_map in (None, "cpu"):
        return torch.device("cpu")
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device_map, dict):
        devices = set(device_map.values())
        if len(devices) != 1:
            raise ValueError("BTLMForCausalLM loads onto one device; a device_map over several is not supported")
        device_map = devices.pop()
    return torch.device(f"cuda:{device_map}" if isinstance(device_map, int) else device_map)


def _local_folder(name_or_path, kwargs: dict[str, Any]) -> Path:
    """A local folder, or the snapshot of a Hub repository (config, weights and tokenizer only)."""
    subfolder = kwargs.pop("subfolder", "") or ""
    hub = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
    path = Path(name_or_path)
    if path.is_dir():
        return path / subfolder
    from huggingface_hub import snapshot_download

    prefix = f"{subfolder}/" if subfolder else ""
    local = snapshot_download(
        str(name_or_path), revision=hub.get("revision"), cache_dir=hub.get("cache_dir"),
        token=hub.get("token", hub.get("use_auth_token")), local_files_only=bool(hub.get("local_files_only")),
        force_download=bool(hub.get("force_download")), allow_patterns=[prefix + "*.json", prefix + "*.safetensors"],
    )
    return Path(local) / subfolder


__all__ = ["AUTO_MAP", "BTLMForCausalLM", "BTLMHFConfig"]
