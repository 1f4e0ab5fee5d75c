"""Peak memory and throughput of one worker process embedding with the local model: before vs. now.

    python bench/embedding_memory.py [--texts 512] [--threads 1] [--quick]

The same texts (SciFact abstracts chunked to the most the model reads, 254 word pieces: the worst
case for memory) are embedded in a fresh process per configuration, through
``documents.embeddings.embed_in_batches`` as the ingestion does (``EMBEDDING_BATCH_SIZE`` = 64 texts
per call), after ``django.setup()`` and the imports a worker process has. Each process reports its
RSS after loading the model and its peak RSS (``ru_maxrss``), and the chunks/s of the embedding
alone (after one warm-up call). Configurations:

- ``before``: fastembed as the app ran it until now (the shared model folder, onnxruntime's
  default CPU arena and graph optimisations, 64 texts padded together);
- then our backend (sorted by length, batches bounded by padded tokens) one change at a time: with
  the arena, all graph optimisations and glibc's default heap; arena off; glibc's large buffers
  kept mapped (``return_large_buffers_to_the_system``); graph optimisations off (the default);
- the default at ``EMBEDDING_BATCH_TOKENS`` = 1024 / 2048 / 4096 / 8192.

``EMBEDDING_THREADS`` is 1 by default: what ``make run`` gives each of its 2 worker processes on
2 cores. Appends one table to bench/BENCHMARKS.md and ends with a line of key=value figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

DATABASE = "ragbench_embedding_memory"
DEFAULT = "ours, 2048 (default)"
CONFIGS = {
    "before": {"backend": "fastembed"},
    "ours, 4096, arena, graph opt., glibc heap": {"batch_tokens": 4096, "arena": True, "optimise": True, "heap": True},
    "ours, 4096, graph opt., glibc heap": {"batch_tokens": 4096, "optimise": True, "heap": True},
    "ours, 4096, graph opt.": {"batch_tokens": 4096, "optimise": True},
    "ours, 1024": {"batch_tokens": 1024},
    DEFAULT: {"batch_tokens": 2048},
    "ours, 4096": {"batch_tokens": 4096},
    "ours, 8192": {"batch_tokens": 8192},
}


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def child(config: dict, texts_file: str, threads: int) -> None:
    """One worker-like process: load the model, embed every text, print the figures as JSON."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
    sys.path.insert(0, str(_common.ROOT))
    import django

    django.setup()
    from django.conf import settings

    import documents.pipeline  # noqa: F401  (what a worker process has imported)
    from documents import embeddings

    texts = json.loads(Path(texts_file).read_text())
    before = rss_mb()
    settings.EMBEDDING_THREADS = threads
    if config.get("backend") == "fastembed":
        backend = embeddings.FastembedBackend(embeddings.DEFAULT_FASTEMBED_MODEL, str(_common.MINILM), 384,
                                              _common.ROOT / "var" / "models")
    else:
        import onnxruntime

        options = embeddings.session_options(threads=threads)
        options.enable_cpu_mem_arena = bool(config.get("arena"))
        if config.get("optimise"):
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if config.get("heap"):
            embeddings.return_large_buffers_to_the_system = lambda: None
        backend = embeddings.LocalModelBackend(dimensions=384, batch_tokens=config["batch_tokens"], threads=threads,
                                               options=options)
    loaded = rss_mb()
    backend.embed_documents(texts[:2])
    started = time.perf_counter()
    vectors = embeddings.embed_in_batches(backend, texts, batch_size=64)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "import_mb": before, "loaded_mb": loaded, "after_mb": rss_mb(),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "chunks_per_s": len(texts) / seconds, "vectors": vectors[:4].tolist(),
    }))


def corpus_texts(count: int) -> list[str]:
    from documents.chunking import chunk_sections
    from documents.parsing import Section

    texts: list[str] = []
    with (_common.require_shared("data/scifact") / "corpus.jsonl").open() as handle:
        for line in handle:
            row = json.loads(line)
            texts.append(f"{row['title']}\n\n{row['text']}")
            if len(texts) >= count * 2:
                break
    drafts = chunk_sections([Section(text="\n\n".join(texts))], chunk_size=254, chunk_overlap=0)
    return [draft.text for draft in drafts][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="16 texts, before and now: not recorded (CI)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(CONFIGS[args.child], args.texts_file, args.threads)
        return

    _common.require_shared("models/all-MiniLM-L6-v2-int8")
    _common.setup_django(DATABASE, LOG_LEVEL="WARNING")
    from documents.chunking import count_tokens

    count = 16 if args.quick else args.texts
    texts = corpus_texts(count)
    tokens = [count_tokens(text) for text in texts]
    texts_file = _common.ROOT / "var" / "bench-embedding-memory-texts.json"
    texts_file.parent.mkdir(parents=True, exist_ok=True)
    texts_file.write_text(json.dumps(texts))
    names = ["before", DEFAULT] if args.quick else list(CONFIGS)
    results = {}
    for name in names:
        env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
        output = subprocess.run(
            [sys.executable, __file__, "--child", name, "--texts-file", str(texts_file),
             "--threads", str(args.threads)],
            env=env, check=True, capture_output=True, text=True,
        ).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
        figures = results[name]
        print(f"{name:42} loaded {figures['loaded_mb']:6.0f} MB  peak {figures['peak_mb']:6.0f} MB  "
              f"{figures['chunks_per_s']:6.1f} chunks/s", flush=True)
    import numpy as np

    reference = np.array(results["before"]["vectors"])
    for name, figures in results.items():
        agreement = float(np.min((np.array(figures["vectors"]) * reference).sum(axis=1)))
        assert agreement > 0.9999, f"{name} made other vectors than fastembed ({agreement})"

    table = [["configuration", "RSS after import (MB)", "after loading the model", "peak (MB)", "chunks/s"]]
    table += [[name, *(f"{f[key]:.0f}" for key in ("import_mb", "loaded_mb", "peak_mb")), f"{f['chunks_per_s']:.1f}"]
              for name, f in results.items()]
    before, ours = results["before"], results[DEFAULT]
    _common.report(
        args.quick, "Embedding memory per worker process (local model): before vs. now",
        f"{len(texts)} SciFact chunks of {min(tokens)}-{max(tokens)} word pieces "
        f"(mean {sum(tokens) / len(tokens):.0f}), "
        f"EMBEDDING_BATCH_SIZE=64, EMBEDDING_THREADS={args.threads}, a fresh process per row "
        "(`python bench/embedding_memory.py`)",
        table,
        notes=(f"Peak RSS of a worker-like process: {before['peak_mb']:.0f} MB before, {ours['peak_mb']:.0f} MB now "
               f"({before['chunks_per_s']:.1f} vs. {ours['chunks_per_s']:.1f} chunks/s). The same vectors in every "
               "row (checked)."),
    )
    print(f"before_peak_mb={before['peak_mb']:.0f} ours_peak_mb={ours['peak_mb']:.0f} "
          f"before_chunks_per_s={before['chunks_per_s']:.1f} ours_chunks_per_s={ours['chunks_per_s']:.1f}")


if __name__ == "__main__":
    main()
