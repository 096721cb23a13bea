"""What the teacher's tokens came to: the counters a run records per method and the report's
"Teacher tokens" section, with dollars where ``teacher.price_per_mtok`` is set.

Two counts per method (``timings`` in its result.json):

* ``prompt_tokens`` / ``completion_tokens``: over the generated replies the method used, cached
  ones included at the counts the server reported when they were asked (``usage``);
* ``sent_prompt_tokens`` / ``sent_completion_tokens``: over the requests sent to the teacher
  during the method in this process, which is what a hosted API bills. For the OpenAI backend
  these are the servers' ``usage`` of every request (generation, option scoring, probes); for
  local backends, the generated replies that were not cached.

Dollars are those counts times ``teacher.price_per_mtok`` (``input`` for prompt tokens,
``output`` for completion tokens, per million), worked out when the report is written, so a
price set later shows after ``llmkd eval``.
"""

from __future__ import annotations

from typing import Any

from .cache import CachedTeacher


def counters(teacher: CachedTeacher | None) -> dict[str, int]:
    """The running token and constraint counters of ``teacher`` (zeros for None)."""
    if teacher is None:
        return dict.fromkeys(_NAMES, 0)
    backend = getattr(teacher.teacher, "usage", None)
    if isinstance(backend, dict):  # the server's usage of every request sent (scoring and probes included)
        sent = int(backend.get("prompt_tokens", 0)), int(backend.get("completion_tokens", 0))
    else:
        sent = teacher.asked_prompt_tokens, teacher.asked_completion_tokens
    return {"sent_prompt_tokens": sent[0], "sent_completion_tokens": sent[1],
            "constrained_replies": teacher.constrained_replies,
            "unconstrained_replies": teacher.unconstrained_replies,
            "constraint_violations": teacher.violations}


_NAMES = ("sent_prompt_tokens", "sent_completion_tokens", "constrained_replies", "unconstrained_replies",
          "constraint_violations")


def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in after}


def dollars(price: Any, prompt_tokens: float, completion_tokens: float) -> float | None:
    """The cost of the tokens at ``price`` (a PriceConfig or {input, output}); None without one."""
    if price is None:
        return None
    p_in, p_out = prices(price)
    return (prompt_tokens * p_in + completion_tokens * p_out) / 1e6


def prices(price: Any) -> tuple[float, float]:
    get = price.get if isinstance(price, dict) else lambda k: getattr(price, k)
    return float(get("input")), float(get("output"))


def usage_section(cfg: Any, results: dict[str, dict[str, Any]]) -> list[str]:
    """report.md's "Teacher tokens" lines: one row per method that used the teacher; none when
    no method recorded tokens."""
    rows = {m: r.get("timings") or {} for m, r in results.items()}
    rows = {m: t for m, t in rows.items() if "prompt_tokens" in t or "sent_prompt_tokens" in t}
    if not rows:
        return []
    price = getattr(getattr(cfg, "teacher", None), "price_per_mtok", None)
    head = "| method | prompt tokens | completion tokens | sent: prompt | sent: completion |"
    sep = "|---|---:|---:|---:|---:|"
    if price is not None:
        head += " $ (labels) | $ (sent) |"
        sep += "---:|---:|"
    lines = ["## Teacher tokens", "", head, sep]
    for m, t in rows.items():
        cells = [t.get("prompt_tokens"), t.get("completion_tokens"), t.get("sent_prompt_tokens"),
                 t.get("sent_completion_tokens")]
        line = f"| {m} | " + " | ".join("–" if v is None else f"{int(v):,}" for v in cells) + " |"
        if price is not None:
            used = dollars(price, t.get("prompt_tokens") or 0, t.get("completion_tokens") or 0)
            sent = dollars(price, t.get("sent_prompt_tokens") or 0, t.get("sent_completion_tokens") or 0)
            line += f" {used:.4f} | {sent:.4f} |"
        lines.append(line)
    lines += ["", "Tokens as the teacher's server (or tokenizer) reported them. \"prompt / completion tokens\": the "
              "generated replies each method used, cached ones at their original counts; \"sent\": every request "
              "sent to the teacher during the method in this run (option scoring and probes included for "
              "OpenAI-compatible servers), which is what a hosted API bills."
              + (" Dollars at teacher.price_per_mtok (input {:g}, output {:g} US$ per million tokens).".format(
                  *prices(price)) if price is not None else "")]
    violations = {m: t.get("constraint_violations") for m, t in rows.items() if t.get("constraint_violations")}
    if violations:
        lines += ["", "Replies that broke the constraint they were asked under (counted as unconstrained): "
                  + ", ".join(f"{m} {n}" for m, n in violations.items()) + "."]
    return lines + [""]
