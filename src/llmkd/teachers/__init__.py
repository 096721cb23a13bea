"""Teacher backends behind one protocol. :func:`build_teacher` turns a config into one; every
backend is imported lazily, so a missing extra only matters when that backend is used."""

from __future__ import annotations

from ..config import TeacherConfig
from ..errors import ConfigError
from .base import Teacher, make_fingerprint, normalize_options
from .cache import CachedTeacher, TeacherCache

BACKENDS = ("llamacpp", "hf", "openai")


def build_teacher(cfg: TeacherConfig) -> Teacher:
    """A teacher for ``cfg``. Local models are resolved through the zoo (pulled if needed) but not
    loaded until the first call that misses the cache."""
    from .. import zoo

    chat = cfg.chat if cfg.chat is not None else cfg.backend == "openai"
    if cfg.backend == "llamacpp":
        from .llamacpp import LlamaCppTeacher

        path, sha = zoo.resolve(cfg.model)
        if not path.endswith(".gguf"):
            raise ConfigError(
                f"teacher.model: the llamacpp backend needs a GGUF file, got {cfg.model!r} -> {path}. "
                "Use a zoo name (llmkd models list), a .gguf path, or teacher.backend=hf"
            )
        return LlamaCppTeacher(model_path=path, weights_sha256=zoo.weights_fingerprint(path, sha), chat=chat,
                               n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, seed=cfg.seed, repack=cfg.repack)
    if cfg.backend == "hf":
        from .hf import HFTeacher

        path, sha = zoo.resolve(cfg.model)
        return HFTeacher(model=path, weights_sha256=zoo.weights_fingerprint(path, sha), gguf_file=cfg.gguf_file,
                         chat=chat)
    if cfg.backend == "openai":
        from .openai import OpenAITeacher

        o = cfg.openai
        return OpenAITeacher(model=cfg.model, base_url=o.base_url, api_key_env=o.api_key_env,
                             concurrency=o.concurrency, max_retries=o.max_retries, timeout=o.timeout,
                             backoff=o.backoff, chat=chat, seed=cfg.seed, guided=o.guided)
    raise ConfigError(f"teacher.backend: allowed values are {BACKENDS} (got {cfg.backend!r})")


__all__ = ["Teacher", "CachedTeacher", "TeacherCache", "build_teacher", "make_fingerprint", "normalize_options", "BACKENDS"]
