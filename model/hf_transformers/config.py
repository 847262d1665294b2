"""transformers' view of the model config: ``model_type: btlm`` with the published field names.

Every field and default comes from the project's ``BTLMConfig`` (one source of truth),
which also validates the values. The ``attribute_map`` gives generation and its caches the
standard names they ask for (``num_hidden_layers``, ``hidden_size`` ...). This module is
the ``configuration_btlm.py`` of an exported folder (``python -m model.export``).
"""

from __future__ import annotations

import dataclasses

from transformers import PretrainedConfig

from model.config import BTLMConfig

PROJECT_FIELDS = tuple(f.name for f in dataclasses.fields(BTLMConfig))


class BTLMHFConfig(PretrainedConfig):
    model_type = "btlm"
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(self, **kwargs) -> None:
        given = {name: kwargs.pop(name) for name in PROJECT_FIELDS if name in kwargs}
        project = BTLMConfig.from_dict(given, "BTLMHFConfig")  # fills derived fields and validates
        kwargs.setdefault("architectures", ["BTLMLMHeadModel"])
        kwargs.setdefault("tokenizer_class", "GPT2TokenizerFast")  # what pipeline() loads as remote code
        super().__init__(**kwargs)
        # Set after the base class, whose defaults (tie_word_embeddings, token ids) differ by version.
        for name, value in project.to_dict().items():
            setattr(self, name, value)

    @classmethod
    def from_project(cls, config: BTLMConfig, **kwargs) -> "BTLMHFConfig":
        return cls(**config.to_dict(), **kwargs)

    def to_project(self) -> BTLMConfig:
        """The project's BTLMConfig with this config's current values."""
        return BTLMConfig.from_dict({name: getattr(self, name) for name in PROJECT_FIELDS}, "BTLMHFConfig")
