#!/usr/bin/env python3
"""qroute's online DQN and baselines against Vowpal Wabbit's SquareCB on the
same replayed bandit stream.

For every set, shuffle seed and cost weight λ:

1. `qroute simulate` streams the train split (shuffled with the seed) through
   the DQN and the baselines and writes a trace (one line per round and
   policy: id, models, reward, regret). The order of ids in the trace *is*
   the stream; it does not depend on the policies or on λ.
2. The same ids, in the same order, are fed to VW one pass as
   `--cb_explore_adf` examples:

       shared |s <prompt words> |t <task>
       |a m=<model>                       (one line per model, sorted like qroute)

   The action VW takes each round is drawn from its predicted pmf with a
   seeded `random.Random`, and it learns from `0:<cost>:<p> |a m=<model>` on
   that action only. VW cost = −reward, reward = quality − λ·cost_usd/C, C the
   dearest model's mean cost on the train split (read from qroute's
   report.json, and checked against this script's own computation).
3. Regret per round = best reward among the prompt's recorded outcomes − the
   reward of the model taken, exactly as qroute's simulator computes it.

VW is tuned on the stream itself (a grid over `--gamma_scale`, `-l`,
and interactions; SquareCB takes only `--cb_type mtr`; its best per cell, averaged over seeds, is the
reference), which favours VW: qroute runs with its fixed defaults.

Usage (from the repository root, after `cargo build --release`):

    python3 benches/bandit_vs_vw/compare.py [--qroute target/release/qroute]
        [--sets alpaca_eval,routellm_mmlu_gsm8k] [--lambdas 0.1,0.5,1]
        [--seeds 1,2,3] [--grid full|default] [--jobs 2] [--out DIR]
        [-- extra `qroute simulate` arguments]
"""

import argparse
import hashlib
import itertools
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# VW's defaults for SquareCB (gamma_scale 10, -l 0.5, cb_type mtr), with the
# shared × action interactions without which the prompt cannot change the
# choice (ADF scores are linear; shared features alone shift every action alike).
VW_BASE = "--cb_explore_adf --squarecb --quiet --random_seed 1 -b 20"
VW_DEFAULT = "-q sa -q ta"


def vw_grid(kind):
    if kind == "default":
        return [VW_DEFAULT]
    grid = ["", VW_DEFAULT]  # without interactions: the prompt is ignored
    # SquareCB accepts only `--cb_type mtr` (VW 9.11 refuses ips and dr with it).
    for g, lr in itertools.product([10, 30, 100, 300, 1000, 3000], [0.03, 0.1, 0.5, 2.0]):
        grid.append(f"{VW_DEFAULT} --gamma_scale {g} -l {lr}")
    return grid


def load_train(path):
    rows = {}
    for line in open(path):
        r = json.loads(line)
        if r.get("split") != "train":
            continue
        rows[r["id"]] = {
            "prompt": r["prompt"],
            "task": r.get("task"),
            "outcomes": {m: {"quality": o["quality"], "cost_usd": o["cost_usd"]} for m, o in r["outcomes"].items()},
        }
    models = sorted({m for r in rows.values() for m in r["outcomes"]})
    return rows, models


def per_task_floor(rows, models, lam, C):
    """Regret of the best model per task in hindsight (all outcomes seen):
    what a router that knows each task's averages, and nothing about the
    prompt beyond its task, would pay against the per-prompt oracle."""
    by_task = defaultdict(list)
    for r in rows.values():
        by_task[r.get("task")].append([r["outcomes"][m]["quality"] - lam * r["outcomes"][m]["cost_usd"] / C for m in models])
    total = 0.0
    for xs in by_task.values():
        best = max(range(len(models)), key=lambda m: sum(x[m] for x in xs))
        total += sum(max(x) - x[best] for x in xs)
    return total / max(len(rows), 1)


def cost_scale(rows, models):
    """C: the highest per-model mean cost on the train split."""
    best = 0.0
    for m in models:
        cs = [r["outcomes"][m]["cost_usd"] for r in rows.values() if m in r["outcomes"]]
        best = max(best, sum(cs) / max(len(cs), 1))
    return max(best, 1e-12)


WORD = re.compile(r"[a-z0-9]+")


def shared_line(r):
    words = " ".join(WORD.findall(r["prompt"].lower())) or "empty"
    task = r.get("task")
    line = f"shared |s {words}"
    if task:
        line += " |t " + re.sub(r"[\s|:]+", "_", task)
    return line


def run_vw(args):
    """One pass of VW over `stream`; returns mean regret per round."""
    vw_args, stream, rows, models, lam, C, seed = args
    from vowpalwabbit import Workspace

    vw = Workspace(f"{VW_BASE} {vw_args}")
    rng = random.Random(seed)
    actions = [f"|a m={re.sub(r'[^A-Za-z0-9_.-]', '_', m)}" for m in models]
    total = 0.0
    for rid in stream:
        r = rows[rid]
        rewards = [r["outcomes"][m]["quality"] - lam * r["outcomes"][m]["cost_usd"] / C for m in models]
        shared = shared_line(r)
        pmf = vw.predict([shared] + actions)
        z = sum(pmf)
        u, a = rng.random() * z, len(pmf) - 1
        for i, p in enumerate(pmf):
            if u < p:
                a = i
                break
            u -= p
        total += max(rewards) - rewards[a]
        labelled = [shared] + [
            f"0:{-rewards[i]:.6f}:{max(pmf[a] / z, 1e-6):.6f} {act}" if i == a else act for i, act in enumerate(actions)
        ]
        vw.learn(labelled)
    vw.finish()
    return total / max(len(stream), 1)


def run_qroute(qroute, data, lam, seed, out, extra):
    tag = f"{os.path.basename(data).split('.')[0]}-l{lam}-s{seed}"
    trace = os.path.join(out, f"{tag}.trace.jsonl")
    report = os.path.join(out, tag)
    cmd = [
        qroute, "simulate", "--data", data, "--feedback", "bandit", "--cost-weight", str(lam),
        "--shuffle-seed", str(seed), "--trace", trace, "--report", report,
        "--decisions", os.path.join(out, f"{tag}.decisions.jsonl"),
    ] + extra
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    regret = defaultdict(float)
    rounds = defaultdict(int)
    stream = []
    first = None
    for line in open(trace):
        t = json.loads(line)
        first = first or t["policy"]
        if t["policy"] == first:
            stream.append(t["id"])
        regret[t["policy"]] += t["regret"]
        rounds[t["policy"]] += 1
    C = json.load(open(os.path.join(report, "report.json")))["cost_scale"]
    os.remove(trace)
    return stream, C, {p: regret[p] / rounds[p] for p in regret}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--qroute", default=os.path.join(target, "release", "qroute"))
    ap.add_argument("--sets", default="alpaca_eval,routellm_mmlu_gsm8k")
    ap.add_argument("--lambdas", default="0.1,0.5,1")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--grid", default="full", choices=["full", "default"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="/tmp/qroute-bandit-vs-vw")
    ap.add_argument("--vw-only", action="store_true", help="VW's grid only (qroute runs with --policies uniform)")
    ap.add_argument("--json", help="write every number here too")
    ap.add_argument("extra", nargs="*", help="after --: extra `qroute simulate` arguments")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    lams = [float(x) for x in a.lambdas.split(",")]
    seeds = [int(x) for x in a.seeds.split(",")]
    grid = vw_grid(a.grid)
    results = {}
    for name in a.sets.split(","):
        data = os.path.join(ROOT, "data", f"{name}.jsonl")
        rows, models = load_train(data)
        mine_C = cost_scale(rows, models)
        # qroute runs (one process each, in parallel), then VW jobs.
        runs = [(lam, s) for lam in lams for s in seeds]
        with multiprocessing.Pool(a.jobs) as pool:
            extra = ["--policies", "uniform"] if a.vw_only else a.extra
            sims = pool.starmap(run_qroute, [(a.qroute, data, lam, s, a.out, extra) for lam, s in runs])
            # VW's numbers depend only on the stream, λ and its settings:
            # cached by those (the stream's ids hashed) across invocations.
            cache_path = os.path.join(a.out, "vw-cache.json")
            cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
            jobs, keys = [], []
            vw_regret = {}
            for (lam, s), (stream, C, _) in zip(runs, sims):
                assert abs(C - mine_C) <= 1e-6 * mine_C, (C, mine_C)
                assert len(stream) == len(rows)
                sid = hashlib.sha256("\n".join(stream).encode()).hexdigest()[:16]
                for g in grid:
                    ck = f"{name}|{sid}|{lam}|{s}|{g}"
                    if ck in cache:
                        vw_regret[(lam, s, g)] = cache[ck]
                    else:
                        jobs.append((g, stream, rows, models, lam, C, s))
                        keys.append((lam, s, g, ck))
            for (lam, s, g, ck), v in zip(keys, pool.map(run_vw, jobs, chunksize=1)):
                vw_regret[(lam, s, g)] = cache[ck] = v
            json.dump(cache, open(cache_path, "w"))
        for lam in lams:
            qr = defaultdict(list)
            for (l2, s), (_, _, reg) in zip(runs, sims):
                if l2 == lam:
                    for p, v in reg.items():
                        qr[p].append(v)
            q_mean = {p: sum(v) / len(v) for p, v in qr.items()}
            vw_mean = {g: sum(vw_regret[(lam, s, g)] for s in seeds) / len(seeds) for g in grid}
            best_g = min(vw_mean, key=vw_mean.get)
            results[(name, lam)] = {
                "qroute": q_mean,
                "vw_default": vw_mean[VW_DEFAULT],
                "vw_best": vw_mean[best_g],
                "vw_best_args": best_g,
                "vw_grid": vw_mean,
                "per_task_floor": per_task_floor(rows, models, lam, mine_C),
            }
    print(f"mean regret per round, averaged over shuffle seeds {a.seeds}; VW best of {len(grid)} settings")
    print(f"{'set':<22}{'λ':>5}{'dqn':>9}{'best baseline':>24}{'best-single':>12}{'VW default':>12}{'VW best':>10}{'dqn/VW':>8}{'task floor':>11}  VW best args")
    for (name, lam), r in results.items():
        q = r["qroute"]
        base = {p: v for p, v in q.items() if p not in ("dqn", "uniform", "best-single")}
        bp = min(base, key=base.get) if base else "-"
        dqn = q.get("dqn", float("nan"))
        bstr = f"{bp} {base[bp]:.4f}" if base else "-"
        hind = q.get("best-single", float("nan"))
        print(
            f"{name:<22}{lam:>5}{dqn:>9.4f}{bstr:>24}{hind:>12.4f}{r['vw_default']:>12.4f}{r['vw_best']:>10.4f}"
            f"{dqn / r['vw_best']:>8.2f}{r['per_task_floor']:>11.4f}  {r['vw_best_args'] or '(no interactions)'}"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({f"{n}@{l}": r for (n, l), r in results.items()}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
