"""Teacher requests paid when several processes share one cache file (issue 25 item 6).

``--procs`` processes label the same ``--n`` prompts through CachedTeacher(OpenAITeacher) against
one loopback fake OpenAI server (tests/fake_openai_server.py, ``--delay`` s per request), all
started together, in the same prompt order (``--order same``: the worst case, every process
wants the same prompt at the same time) or each in its own shuffled order (``--order shuffled``).
Prints the POST requests the server received, against the number of distinct prompts.

    python bench/cache_dedup.py                        # 3 processes, 600 prompts
    PYTHONPATH=/old/checkout/src python bench/cache_dedup.py   # the same with another llmkd
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import random, sys
from llmkd.teachers.cache import CachedTeacher, TeacherCache
from llmkd.teachers.openai import OpenAITeacher
url, path, n, order, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
teacher = CachedTeacher(OpenAITeacher(model="m", base_url=url, api_key_env=None, concurrency=4), TeacherCache(path))
prompts = [f"prompt {i}" for i in range(n)]
if order == "shuffled":
    random.Random(seed).shuffle(prompts)
sys.stdin.readline()
for start in range(0, n, teacher.batch_size):
    teacher.generate(prompts[start:start + teacher.batch_size], max_tokens=4)
print(teacher.misses, teacher.hits)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--delay", type=float, default=0.02)
    ap.add_argument("--order", choices=["same", "shuffled"], default="same")
    args = ap.parse_args()
    from tests.fake_openai_server import FakeOpenAIServer

    import llmkd

    src = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or str(ROOT / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(ROOT)])}
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(delay=args.delay) as server:
        cache = str(Path(tmp) / "teacher.sqlite")
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, server.base_url, cache, str(args.n), args.order, str(k)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                 for k in range(args.procs)]
        time.sleep(2.0)  # let every child import and open the cache
        t0 = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate()[0].split() for p in procs]
        wall = time.perf_counter() - t0
        posts = len(server.requests)
    print(f"llmkd from {Path(llmkd.__file__).parent}; {args.procs} processes, {args.n} shared prompts, "
          f"order {args.order}, server delay {args.delay}s")
    print(f"POST requests: {posts} for {args.n} distinct prompts ({posts - args.n} paid twice or more); "
          f"misses per process: {[int(o[0]) for o in outs]}; wall {wall:.1f}s")


if __name__ == "__main__":
    main()
