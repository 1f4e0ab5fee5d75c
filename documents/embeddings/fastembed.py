"""``fastembed``: another local ONNX model by name (``EMBEDDING_MODEL``, downloaded on first use), or a
local folder of one (``EMBEDDING_MODEL_PATH``, offline).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from documents.embeddings.base import EmbeddingBackend, _normalise

DEFAULT_FASTEMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class FastembedBackend(EmbeddingBackend):
    """A local ONNX model through fastembed (CPU; no PyTorch)."""

    max_batch = 256

    def __init__(self, model: str, path: str, dimensions: int, cache_dir: Path):
        from fastembed import TextEmbedding

        self.model_name = model
        kwargs: dict[str, Any] = {"model_name": model, "cache_dir": str(cache_dir), "lazy_load": False,
                  "threads": settings.EMBEDDING_THREADS or None}
        if path:
            if not Path(path, "model.onnx").exists() and not Path(path, "onnx", "model.onnx").exists():
                raise ImproperlyConfigured(f"EMBEDDING_MODEL_PATH={path} holds no model.onnx.")
            _register_local_model(model, path, dimensions)
            kwargs.update(specific_model_path=path, local_files_only=True)
        try:
            self._model = TextEmbedding(**kwargs)
        except ValueError as error:
            raise ImproperlyConfigured(f"fastembed cannot load {model!r}: {error}") from error
        self.dimensions = int(self._model.embedding_size)
        self._truncate_like_sentence_transformers()

    def _truncate_like_sentence_transformers(self) -> None:
        """Cut inputs where the model was trained to (all-MiniLM-L6-v2: 256 word pieces, not 512).

        Longer inputs only cost time: the model never learned to use those positions.
        """
        inner = getattr(self._model, "model", None)
        model_dir = getattr(inner, "_model_dir", None)
        tokenizer = getattr(inner, "tokenizer", None)
        if model_dir is None or tokenizer is None:
            return
        config = Path(model_dir, "sentence_bert_config.json")
        try:
            limit = int(json.loads(config.read_text()).get("max_seq_length") or 0)
        except (OSError, ValueError):
            return
        if 0 < limit < (tokenizer.truncation or {}).get("max_length", limit + 1):
            tokenizer.enable_truncation(max_length=limit, direction=tokenizer.truncation.get("direction", "right"))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return _normalise(np.stack(list(self._model.embed(list(texts), batch_size=min(len(texts), 64)))))


def _register_local_model(model: str, path: str, dimensions: int) -> None:
    """Describe a model fastembed does not know, so that a local folder of it can load."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    if any(m["model"].lower() == model.lower() for m in TextEmbedding.list_supported_models()):
        return
    model_file = "model.onnx" if Path(path, "model.onnx").exists() else "onnx/model.onnx"
    TextEmbedding.add_custom_model(
        model=model, pooling=PoolingType.MEAN, normalization=True,
        sources=ModelSource(hf=model), dim=dimensions, model_file=model_file,
    )
