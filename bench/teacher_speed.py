"""Teacher throughput: llmkd's llama.cpp teacher against a raw llama-cpp-python loop.

All rows run in one process on the same few-shot classification prompts (SST-2 train sentences,
k gold shots per class, the classify.v1 template) with the same model, greedy decoding, the same
max tokens and the same stop string:

* anchor    -- a raw llama-cpp-python loop written plainly below (``create_chat_completion``),
* naive     -- llmkd's LlamaCppTeacher with ``prefix_reuse=False`` (every prompt from scratch),
* optimized -- llmkd's LlamaCppTeacher as shipped (shared-prefix KV reuse), writing a fresh cache,
* cached    -- the same prompts again through the cache (a rerun of ``llmkd label``).

Every row loads the model with the same weight-repacking setting (``--repack``, default ``auto``:
what ``teacher.repack: auto`` resolves to on this machine, see llmkd/teachers/native.py), the
anchor included. A second section measures the setting's cost: the anchor and llmkd optimized,
each with repacking on and off, interleaved on the first ``--repack-n`` prompts, where "on" runs
at all on this CPU (its probe passes).

The anchor, naive and optimized rows are interleaved in blocks of ``--block`` prompts (the row
order rotates from block to block), so the load of a shared machine hits every row alike; each
row has its own model instance, so no row profits from another's KV state.

Also: option scoring (``score_options``, the confidence of every label) naive vs optimized on
the first ``--score-n`` prompts; a roofline line (numpy float32 matmul peak vs the model's FLOPs
per token times the optimized row's token rate); and scale-out over 1, 2, 4 loopback stub servers
that serve one request at a time and sleep ``--stub-delay`` s per request, like a one-slot
llama.cpp server.

    python bench/teacher_speed.py                 # the issue's scale: 500 prompts
    python bench/teacher_speed.py --n 200         # smaller; the doc says which
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _common import ROOT, SHARED, interleaved  # noqa: E402  (puts src/ on sys.path)

from llmkd import zoo  # noqa: E402
from llmkd.config import DataConfig  # noqa: E402
from llmkd.data import read_examples  # noqa: E402
from llmkd.tasks.classification import ClassificationTask  # noqa: E402
from llmkd.teachers.cache import CachedTeacher, TeacherCache  # noqa: E402
from llmkd.teachers import native  # noqa: E402
from llmkd.teachers.llamacpp import LlamaCppTeacher  # noqa: E402
from llmkd.types import Example  # noqa: E402

SST2 = SHARED / "data" / "sst2" / "stsa.binary.train"


def load_prompts(n: int, k: int) -> tuple[ClassificationTask, list[str]]:
    cfg = DataConfig(train=str(SST2), test=str(SST2), format="label_text", separator=" ",
                     label_map={"0": "negative", "1": "positive"}, labels=["negative", "positive"])
    rows = read_examples(SST2, cfg)
    task = ClassificationTask(labels=["negative", "positive"], instruction="Classify the sentiment of the movie review.",
                              template="classify.v1")  # the template of docs/results/teacher_speed.md
    shots: list[Example] = []
    for lab in task.labels:
        shots += [r for r in rows if r.label == lab][:k]
    shots = [s for pair in zip(shots[:k], shots[k:]) for s in pair]  # alternate the classes
    used = {s.id for s in shots}
    pool = [r for r in rows if r.id not in used][:n]
    return task, [task.render(r.text, shots) for r in pool]


class Row:
    def __init__(self, name: str) -> None:
        self.name, self.seconds, self.prompts, self.prompt_tokens, self.gen_tokens = name, 0.0, 0, 0, 0
        self.texts: list[str] = []

    def rates(self) -> dict[str, float]:
        s = self.seconds or 1e-9
        return {"prompts_s": self.prompts / s, "prompt_tok_s": self.prompt_tokens / s, "gen_tok_s": self.gen_tokens / s}


def anchor_loop(llm, prompts: list[str], max_tokens: int, row: Row) -> None:
    """The anchor: the plainest raw llama-cpp-python labeling loop."""
    for p in prompts:
        out = llm.create_chat_completion(messages=[{"role": "user", "content": p}], max_tokens=max_tokens,
                                         temperature=0.0, stop=["\n"])
        row.texts.append(out["choices"][0]["message"]["content"])
        row.prompt_tokens += out["usage"]["prompt_tokens"]
        row.gen_tokens += out["usage"]["completion_tokens"]


def llmkd_loop(teacher, prompts: list[str], max_tokens: int, row: Row) -> None:
    for r in teacher.generate(prompts, max_tokens=max_tokens, stop=("\n",)):
        row.texts.append(r.text)
        row.prompt_tokens += r.prompt_tokens
        row.gen_tokens += r.completion_tokens


def timed(row: Row, fn, *args) -> None:
    t0 = time.perf_counter()
    fn(*args)
    row.seconds += time.perf_counter() - t0


def matmul_peak(threads: int, n: int = 1024, reps: int = 8) -> float:
    """Best float32 GFLOP/s of an n x n torch matmul on ``threads`` threads (the teacher's)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n)
        b = a.T.contiguous()
        a @ b
        best = 0.0
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    finally:
        torch.set_num_threads(before)
    return best


# ---- scale-out stub -------------------------------------------------------------------------


def stub_server(delay: float) -> tuple[ThreadingHTTPServer, str]:
    """An OpenAI-protocol stub that, like a one-slot llama.cpp server, handles one request at a
    time: each takes ``delay`` seconds under a lock."""
    slot = threading.Lock()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            with slot:
                time.sleep(delay)
            reply = {"choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "positive"}}],
                     "usage": {"prompt_tokens": len(str(body)) // 4, "completion_tokens": 1}}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def scale_out(prompts: list[str], counts: list[int], delay: float, per_server: int) -> list[dict]:
    from llmkd.teachers.openai import OpenAITeacher

    out = []
    for n in counts:
        servers = [stub_server(delay) for _ in range(n)]
        teacher = OpenAITeacher(model="stub", base_url=[u for _, u in servers], api_key_env=None,
                                concurrency=per_server * n, max_retries=0)
        t0 = time.perf_counter()
        replies = teacher.generate(prompts, max_tokens=1)
        sec = time.perf_counter() - t0
        assert all(r.text == "positive" for r in replies)
        for httpd, _ in servers:
            httpd.shutdown()
            httpd.server_close()
        out.append({"servers": n, "seconds": sec, "prompts_s": len(prompts) / sec})
    base = out[0]["prompts_s"]
    for r in out:
        r["ratio"] = r["prompts_s"] / base
        r["efficiency"] = r["ratio"] / r["servers"]
    return out


# ---- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n", type=int, default=500, help="prompts")
    ap.add_argument("--k", type=int, default=4, help="gold shots per class in every prompt")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--block", type=int, default=10, help="prompts per interleaved block")
    ap.add_argument("--score-n", type=int, default=40, help="prompts for the score_options comparison")
    ap.add_argument("--servers", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--stub-delay", type=float, default=0.05)
    ap.add_argument("--stub-prompts", type=int, default=200)
    ap.add_argument("--repack", choices=["auto", "on", "off"], default="auto", help="weight repacking of every main row")
    ap.add_argument("--repack-n", type=int, default=200, help="prompts for the repacking on/off comparison (0: skip)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "teacher_speed.md"))
    args = ap.parse_args()
    command = "python bench/teacher_speed.py " + " ".join(sys.argv[1:])
    load_before = os.getloadavg()
    started = dt.datetime.now()
    import llama_cpp

    path, pinned = zoo.resolve(args.model)  # a zoo name is pulled if needed
    sha = zoo.weights_fingerprint(path, pinned)
    repack = native.resolve_repack(path, sha, args.repack, n_threads=args.threads)
    task, prompts = load_prompts(args.n, args.k)
    kw = dict(n_ctx=2048, n_threads=args.threads, repack="on" if repack else "off")
    raw_kw = dict(n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads, n_batch=512, logits_all=False,
                  verbose=False, seed=0)
    raw = native.load_llama(path, repack=repack, **raw_kw)
    naive = LlamaCppTeacher(model_path=path, weights_sha256=sha, prefix_reuse=False, **kw)
    opt = LlamaCppTeacher(model_path=path, weights_sha256=sha, **kw)
    tmp = tempfile.mkdtemp(prefix="llmkd-speed-")
    cache = TeacherCache(Path(tmp) / "teacher.sqlite")
    cached_opt = CachedTeacher(opt, cache)
    naive.count_tokens("x"), opt.count_tokens("x")  # load the models outside the clock
    rows = {"anchor": Row("raw llama-cpp-python loop (anchor)"), "naive": Row("llmkd naive (no prefix reuse)"),
            "optimized": Row("llmkd optimized (first run, writes the cache)")}
    jobs = {"anchor": lambda ps: anchor_loop(raw, ps, args.max_tokens, rows["anchor"]),
            "naive": lambda ps: llmkd_loop(naive, ps, args.max_tokens, rows["naive"]),
            "optimized": lambda ps: llmkd_loop(cached_opt, ps, args.max_tokens, rows["optimized"])}
    for name, sec in interleaved(prompts, args.block, jobs, desc="interleaved blocks").items():
        rows[name].seconds += sec
        rows[name].prompts += len(prompts)
    opt_eval = opt.evaluated_tokens
    naive_eval = naive.evaluated_tokens
    # cached rerun: a fresh wrapper on the same cache file, like a second `llmkd label`
    rerun = Row("llmkd cached rerun")
    rerun_teacher = CachedTeacher(opt, TeacherCache(Path(tmp) / "teacher.sqlite"))
    timed(rerun, llmkd_loop, rerun_teacher, prompts, args.max_tokens, rerun)
    rerun.prompts = len(prompts)
    assert rerun_teacher.misses == 0, "the rerun asked the model"
    rows["cached"] = rerun

    # option scoring (label confidence), naive vs optimized, on a prefix of the same prompts
    opts = list(task.options())
    sp = prompts[: args.score_n]
    score_rows = {}
    for name, t in (("naive", naive), ("optimized", opt)):
        t.evaluated_tokens = 0
        t0 = time.perf_counter()
        s = t.score_options(sp, opts)
        score_rows[name] = {"seconds": time.perf_counter() - t0, "evaluated": t.evaluated_tokens, "scores": s}
    max_diff = max(abs(a - b) for ra, rb in zip(score_rows["naive"]["scores"], score_rows["optimized"]["scores"])
                   for a, b in zip(ra, rb))

    # roofline
    peak = matmul_peak(args.threads)
    n_params = opt._llm._model.n_params()
    n_embed = opt._llm.n_vocab() * opt._llm.n_embd()  # the input embedding is a lookup, not a matmul
    flops_tok = 2 * (n_params - n_embed)  # the output head runs for the last position of a batch only
    opt_tok_s = opt_eval / rows["optimized"].seconds  # tokens run through the model (prompt chunks + steps)
    achieved = flops_tok * opt_tok_s / 1e9

    # weight repacking on vs off: anchor and optimized with each setting, interleaved
    rp_rows: dict[str, Row] = {}
    probes = {on: native.checked(path, sha, on, n_threads=args.threads) for on in (True, False)}
    if args.repack_n and probes[True].ok and probes[False].ok:
        del raw, naive  # free their contexts; opt is still needed for the roofline below
        rp = prompts[: args.repack_n]
        models = {}
        for on in (True, False):
            tag = "on" if on else "off"
            models[f"anchor, repack {tag}"] = native.load_llama(path, repack=on, **raw_kw)
            models[f"llmkd optimized, repack {tag}"] = LlamaCppTeacher(model_path=path, weights_sha256=sha,
                                                                       **{**kw, "repack": tag})
        for name, m in models.items():
            rp_rows[name] = Row(name)
            if isinstance(m, LlamaCppTeacher):
                m.count_tokens("x")
        rp_jobs = {name: (lambda ps, m=m, r=rp_rows[name]: llmkd_loop(m, ps, args.max_tokens, r))
                   if isinstance(m, LlamaCppTeacher) else (lambda ps, m=m, r=rp_rows[name]: anchor_loop(m, ps, args.max_tokens, r))
                   for name, m in models.items()}
        for name, sec in interleaved(rp, args.block, rp_jobs, desc="repack on/off").items():
            rp_rows[name].seconds += sec
            rp_rows[name].prompts += len(rp)
        del models

    so = scale_out([f"prompt {i}" for i in range(args.stub_prompts)], args.servers, args.stub_delay, per_server=2)
    load_after = os.getloadavg()

    # ---- the doc ----
    anchor = rows["anchor"].rates()
    same_anchor = sum(a == b for a, b in zip(rows["anchor"].texts, rows["optimized"].texts))
    same_naive = sum(a == b for a, b in zip(rows["naive"].texts, rows["optimized"].texts))
    lines = [
        "# Teacher throughput",
        "",
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} ({platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{platform.python_version()}, llama-cpp-python {llama_cpp.__version__}, {args.threads} threads; "
        f"CPU {native.cpu_info()['model']}, flags {' '.join(native.cpu_info()['flags'])}).",
        f"Weight repacking in every main row, the anchor's included: **{'on' if repack else 'off'}** "
        f"(`--repack {args.repack}`; llama.cpp build: {native.llama_info()['system_info']}).",
        f"Load average (1/5/15 min) before: {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f}; "
        f"after: {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f}. The machine is shared "
        "with other jobs, so absolute rates are low and noisy; the ratios are measured in the same run, "
        f"interleaved in blocks of {args.block} prompts, so the load affects every row alike.",
        "",
        f"Workload: {len(prompts)} SST-2 train sentences, each in a few-shot classification prompt "
        f"(classify.v1, chat template, {2 * args.k} gold shots), model `{args.model}` (GGUF Q4_K_M), greedy, "
        f"max {args.max_tokens} new tokens, stop at a newline.",
        "",
        "| row | seconds | prompts/s | prompt tok/s | generated tok/s | x anchor | x naive |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, row in rows.items():
        r = row.rates()
        lines.append(f"| {row.name} | {row.seconds:.2f} | {r['prompts_s']:.2f} | {r['prompt_tok_s']:.0f} | "
                     f"{r['gen_tok_s']:.1f} | {r['prompts_s'] / anchor['prompts_s']:.2f} | "
                     f"{r['prompts_s'] / rows['naive'].rates()['prompts_s']:.2f} |")
    cached_speedup = rows["optimized"].seconds / max(rerun.seconds, 1e-9)
    lines += [
        "",
        "Prompt tok/s counts every prompt token (nominal work), also those served from reused KV state. "
        f"Tokens actually run through the model: naive {naive_eval}, optimized {opt_eval} "
        f"(prompt + generated steps), i.e. {naive_eval / max(opt_eval, 1):.1f}x less work.",
        f"Same reply as the anchor: {same_anchor}/{len(prompts)}; optimized vs naive: {same_naive}/{len(prompts)}.",
        f"Cached rerun vs first run: {cached_speedup:.0f}x faster.",
        "",
        f"## Option scoring (label confidence), first {len(sp)} prompts, {len(opts)} options",
        "",
        "| path | seconds | prompts/s | tokens evaluated |",
        "|---|---:|---:|---:|",
    ]
    for name, r in score_rows.items():
        lines.append(f"| {name} | {r['seconds']:.2f} | {len(sp) / r['seconds']:.2f} | {r['evaluated']} |")
    lines += [
        "",
        f"Optimized / naive: {score_rows['naive']['seconds'] / score_rows['optimized']['seconds']:.1f}x; "
        f"largest difference of an option log-likelihood between the paths: {max_diff:.2e}.",
        "",
        "## Roofline",
        "",
        f"- Peak of this CPU, torch float32 1024x1024 matmul on {args.threads} thread(s): {peak:.1f} GFLOP/s "
        "(best of 8, under the same load).",
        f"- Model: {n_params / 1e6:.0f}M parameters, {(n_params - n_embed) / 1e6:.0f}M without the input embedding "
        f"-> ~{flops_tok / 1e9:.2f} GFLOP per token (2 x those params).",
        f"- llmkd optimized: {opt_tok_s:.0f} tokens/s evaluated -> {achieved:.1f} GFLOP/s "
        f"= {100 * achieved / peak:.0f}% of the matmul peak (the weights are 4-bit; llama.cpp's quantized kernels "
        "are not float32 matmuls, so this is an order-of-magnitude check, not a bound).",
        "",
        "## Scale-out: OpenAI-protocol teacher over N loopback stub servers",
        "",
        f"{args.stub_prompts} prompts; each stub serves one request at a time and sleeps {args.stub_delay * 1000:.0f} ms "
        "per request (like a one-slot llama.cpp server); concurrency 2 x N, least-busy balancing.",
        "",
        "| servers | seconds | prompts/s | x 1 server | efficiency (ratio / N) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in so:
        lines.append(f"| {r['servers']} | {r['seconds']:.2f} | {r['prompts_s']:.1f} | {r['ratio']:.2f} | {r['efficiency']:.2f} |")
    lines += ["", "## Weight repacking on vs off (this CPU)", ""]
    lines += [f"- probe, {p.describe()}" for p in probes.values()]
    if rp_rows:
        base = rp_rows["llmkd optimized, repack off"]
        same = sum(a == b for a, b in zip(rp_rows["llmkd optimized, repack on"].texts, base.texts))
        lines += ["", f"First {args.repack_n} prompts of the same workload, the four rows interleaved in blocks of "
                  f"{args.block}.", "",
                  "| row | seconds | prompts/s | x llmkd off | x anchor, same setting |", "|---|---:|---:|---:|---:|"]
        for name, row in rp_rows.items():
            tag = name.rsplit(" ", 1)[1]
            same_anchor_rate = rp_rows[f"anchor, repack {tag}"].rates()["prompts_s"]
            lines.append(f"| {name} | {row.seconds:.2f} | {row.rates()['prompts_s']:.2f} | "
                         f"{row.rates()['prompts_s'] / base.rates()['prompts_s']:.2f} | "
                         f"{row.rates()['prompts_s'] / same_anchor_rate:.2f} |")
        lines += ["", f"Same greedy reply with repacking on and off (llmkd): {same}/{len(base.texts)}."]
    else:
        lines += ["", "Not compared: " + ("--repack-n 0." if not args.repack_n else "a setting does not run on this CPU.")]
    lines += ["", "<!-- notes -->", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    notes = ""
    if out.exists() and "<!-- notes -->" in out.read_text():
        notes = out.read_text().split("<!-- notes -->", 1)[1].strip()
    out.write_text("\n".join(lines) + (notes + "\n" if notes else ""))
    data = {"command": command, "rows": {k: {**v.rates(), "seconds": v.seconds, "prompts": v.prompts} for k, v in rows.items()},
            "evaluated": {"naive": naive_eval, "optimized": opt_eval}, "same_as_anchor": same_anchor,
            "same_as_naive": same_naive, "cached_speedup": cached_speedup,
            "score": {k: {"seconds": v["seconds"], "evaluated": v["evaluated"]} for k, v in score_rows.items()},
            "score_max_diff": max_diff, "peak_gflops": peak, "achieved_gflops": achieved, "scale_out": so,
            "load": [load_before, load_after], "repack": repack,
            "repack_rows": {k: {**v.rates(), "seconds": v.seconds, "prompts": v.prompts} for k, v in rp_rows.items()},
            "probes": {("on" if k else "off"): v.__dict__ for k, v in probes.items()}}
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
