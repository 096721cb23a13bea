"""The llama-cpp-python server as llmkd's OpenAI-compatible teacher (issue 31): what it accepts.

Starts ``python -m llama_cpp.server`` (``pip install 'llama-cpp-python[server]'``) on the cached
Qwen2.5-coder-0.5B GGUF with one thread, then drives it through ``OpenAITeacher`` wrapped in the
cache (a fresh file per run) and records, per check, what the server did: whether it reports a
version (``GET /version``), which tokenizer endpoint answered and whether its counts equal the
local tokenizer's, which constraint dialect the probe found for ``guided: vllm``, how many
replies to constrained requests kept the constraint with ``guided: llamacpp`` (choice, JSON schema,
GBNF grammar; plain and chat), the ``usage`` it reports, and how options are scored.

    python bench/llamacpp_server.py            # 8 SST-2 test sentences, 2 demonstrations
    python bench/llamacpp_server.py --n 4

Writes docs/results/llamacpp_server.md. Numbers are counts over the sentences used; timings are
wall seconds on this machine with one llama.cpp thread (other jobs on the machine slow them).
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import ROOT, SHARED, machine_line

SST2 = SHARED / "data" / "sst2" / "stsa.binary"
GGUF = Path.home() / ".cache" / "llmkd" / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def read_sst2(split: str, n: int) -> list[tuple[str, str]]:
    rows = []
    for line in Path(f"{SST2}.{split}").read_text(encoding="utf-8").splitlines():
        label, _, text = line.partition(" ")
        rows.append((text.strip(), "positive" if label == "1" else "negative"))
    return rows[:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()[:300]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()[:300]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="SST-2 test sentences per check")
    ap.add_argument("--n-score", type=int, default=2, help="sentences whose options are scored (echo scoring "
                    "on this server takes minutes per request: see the doc)")
    ap.add_argument("--model", default=str(GGUF))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "llamacpp_server.md"))
    args = ap.parse_args()
    command, started = "python bench/llamacpp_server.py " + " ".join(sys.argv[1:]), time.time()
    logging.basicConfig(level=logging.WARNING)
    import llama_cpp

    from llmkd.tasks.classification import ClassificationTask
    from llmkd.teachers.base import Constraint
    from llmkd.teachers.cache import CachedTeacher, TeacherCache
    from llmkd.teachers.openai import OpenAITeacher, _DIALECT, _TOKENIZER
    from llmkd.types import Example

    port = free_port()
    server_cmd = [sys.executable, "-m", "llama_cpp.server", "--model", args.model, "--n_threads", "1",
                  "--n_threads_batch", "1", "--n_ctx", "2048", "--logits_all", "true", "--host", "127.0.0.1",
                  "--port", str(port)]
    log_file = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below: stop the server
    proc = subprocess.Popen(server_cmd, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    rows: list[tuple[str, str]] = []

    class Rows(list):  # each finding is printed as it comes
        def append(self, row: tuple[str, str]) -> None:
            print(f"{row[0]}: {row[1]}", flush=True)
            super().append(row)

    rows = Rows()
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"the server exited ({proc.returncode}); its log: {Path(log_file.name).read_text()[-2000:]}")
            try:
                if get(base + "/models")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        status, body = get(f"http://127.0.0.1:{port}/version")
        rows.append(("GET /version", f"HTTP {status}"))
        status, body = get(base + "/models")
        rows.append(("GET /v1/models", f"HTTP {status}; entry: `{json.loads(body)['data'][0] if status == 200 else body}`"))

        task = ClassificationTask(labels=["negative", "positive"])
        shots = [Example(f"s{i}", t, lab) for i, (t, lab) in enumerate(read_sst2("train", 2))]
        items = read_sst2("test", args.n)
        prompts = [task.render(t, shots) for t, _ in items]
        choice = Constraint.choice(["negative", "positive"])

        with tempfile.TemporaryDirectory() as tmp:
            def teacher(**kw: Any) -> CachedTeacher:
                raw = OpenAITeacher(model="qwen", base_url=base, api_key_env=None, concurrency=1, timeout=600.0,
                                    max_retries=1, **kw)
                return CachedTeacher(raw, TeacherCache(Path(tmp) / f"c{len(rows)}.sqlite"))

            # token counts
            t = teacher(chat=False)
            t0 = time.perf_counter()
            counts = [t.count_tokens(p) for p in prompts]
            spent = time.perf_counter() - t0
            local = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)
            exact = [len(local.tokenize(p.encode(), add_bos=True, special=True)) for p in prompts]
            style = _TOKENIZER.get(base)
            rows.append(("tokenizer endpoint", f"`{style}` ({t.teacher.token_count_source}); {len(prompts)} prompts, "
                         f"{sum(counts)} tokens counted, {sum(c == e for c, e in zip(counts, exact))} of "
                         f"{len(prompts)} equal to the local llama.cpp tokenizer's count ({sum(exact)} tokens); "
                         f"{spent:.2f} s"))

            def constrained(label: str, constraint: Constraint | None, ps: list[str], **kw: Any) -> None:
                t = teacher(**kw)
                t0 = time.perf_counter()
                try:
                    replies = t.generate(ps, max_tokens=8 if constraint is None or constraint.kind == "choice" else 48,
                                         stop=["\n"] if constraint is None or constraint.kind == "choice" else [],
                                         constraint=constraint)
                except Exception as exc:  # noqa: BLE001 - what the server does is the measurement
                    rows.append((label, f"error: {str(exc)[:300]}"))
                    return
                spent = time.perf_counter() - t0
                raw = t.teacher
                shown = ", ".join(repr(r.text[:40]) for r in replies[:3])
                dialect = f"; dialect found: {_DIALECT.get(base, 'n/a')}" if kw.get("guided") == "vllm" else ""
                kept = "" if constraint is None else (f"{t.constrained_replies} of {len(replies)} counted constrained, "
                                                      f"{t.violations} break it{dialect}; ")
                rows.append((label, f"{kept}usage: {raw.usage['prompt_tokens']} prompt + "
                             f"{raw.usage['completion_tokens']} completion tokens over {raw.usage['requests']} "
                             f"requests; first replies {shown}; {spent:.1f} s"))

            constrained("choice, guided: vllm, plain", choice, prompts, guided="vllm", chat=False)
            constrained("choice, guided: llamacpp, plain", choice, prompts, guided="llamacpp", chat=False)
            constrained("choice, guided: llamacpp, chat", choice, prompts, guided="llamacpp", chat=True)
            # prompts whose free reply is neither JSON nor "label: ...": a reply in the format shows that
            # the server applied the constraint
            schema = {"type": "object", "properties": {"label": {"enum": ["negative", "positive"]}},
                      "required": ["label"]}
            neutral = [f"In a few words, what is this review about?\nReview: {t}\nAnswer:" for t, _ in items[:3]]
            grammar = Constraint.gbnf('root ::= "label: " ("negative" | "positive")')
            for chat in (False, True):
                mode = "chat" if chat else "plain"
                constrained(f"no constraint (the free replies), {mode}", None, neutral, chat=chat)
                constrained(f"JSON schema, guided: llamacpp, {mode}", Constraint.json_schema(schema), neutral,
                            guided="llamacpp", chat=chat)
                constrained(f"GBNF grammar, guided: llamacpp, {mode}", grammar, neutral, guided="llamacpp", chat=chat)

            for chat in (True, False):
                t = teacher(chat=chat)
                t0 = time.perf_counter()
                scored = prompts[: args.n_score]
                try:
                    scores = t.score_options(scored, task.options())
                    raw = t.teacher
                    right = sum(max(zip(s, task.options()))[1] == lab for s, (_, lab) in zip(scores, items))
                    rows.append((f"option scoring, {'chat' if chat else 'plain'}",
                                 f"path {raw._score_path}, options in one request: {raw._list_prompts}; "
                                 f"{raw.usage['requests']} requests (probes included) for {len(scored)} prompts x 2 "
                                 f"options; argmax right on {right} of {len(scored)}; "
                                 f"{time.perf_counter() - t0:.1f} s"))
                except Exception as exc:  # noqa: BLE001
                    rows.append((f"option scoring, {'chat' if chat else 'plain'}", f"error: {str(exc)[:300]}"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    import llmkd

    lines = [
        "# The llama-cpp-python server as an OpenAI-compatible teacher", "",
        f"Command: `{command}`  ", machine_line(started),
        f"Server: `python -m llama_cpp.server --model {Path(args.model).name} --n_threads 1 --n_threads_batch 1 "
        f"--n_ctx 2048 --logits_all true` (llama-cpp-python {llama_cpp.__version__}); llmkd at "
        f"{Path(llmkd.__file__).parent}.  ",
        f"Data: the first {args.n} SST-2 test sentences (the constrained-JSON and grammar checks: the first 3, "
        f"option scoring: the first {args.n_score}), "
        "classify.v2 prompts with the first 2 training sentences as demonstrations, greedy decoding.", "",
        "| check | what the server did |", "|---|---|",
        *[f"| {k} | {v.replace('|', '/')} |" for k, v in rows], "",
    ]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
