#!/usr/bin/env python3
"""Summary of bench/search_bench.sh: one row per run (sampler, rule, seed) and the comparison
each pruned or TPE run makes with the unpruned random run of the same seed.

"best" is the test accuracy of the finished trial with the highest best-epoch validation
accuracy (what a user would pick: the test set is not looked at to choose); "max test" is the
highest test accuracy of any finished trial. Epochs are counted from the epochs table.
Usage: search_summary.py DIR  (the folder of <name>.db files)."""
import glob, os, re, sqlite3, sys

def run(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    q = lambda s: db.execute(s).fetchall()
    epochs = q("SELECT COUNT(*), COALESCE(SUM(seconds), 0) FROM epochs")[0]
    trials = q("SELECT COUNT(*), SUM(status='done'), SUM(status='pruned') FROM trials")[0]
    full = q("SELECT COALESCE(SUM(epochs), 0) FROM trials")[0][0]
    best = q("""SELECT t.test_acc, MAX(e.valid_acc) AS v FROM trials t JOIN epochs e ON e.trial_id = t.id
                WHERE t.status = 'done' GROUP BY t.id ORDER BY v DESC LIMIT 1""")
    top = q("SELECT MAX(test_acc) FROM trials WHERE status = 'done'")[0][0]
    wall = q("""SELECT (julianday(MAX(finished_at)) - julianday(MIN(started_at))) * 86400 FROM trials""")[0][0]
    return dict(epochs=epochs[0], train_s=epochs[1], trials=trials[0], done=trials[1] or 0,
                pruned=trials[2] or 0, full=full, best=best[0][0] if best else None,
                top=top, wall=wall)

def pct(x):
    return "-" if x is None else f"{100 * x:.2f}%"

rows = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.db"))):
    m = re.match(r"cnn3-(\w+)-(\w+)-s(\d+)\.db$", os.path.basename(path))
    if m:
        rows[(m[1], m[2], int(m[3]))] = run(path)

print("| sampler | pruning | seed | trials done / pruned | epochs run / full | ratio | wall | best (by valid) test acc | max test acc | vs random, no pruning |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (sampler, rule, seed), r in sorted(rows.items(), key=lambda kv: (kv[0][2], kv[0][0] != "random", kv[0][1] != "none", kv[0][1])):
    base = rows.get(("random", "none", seed))
    delta = "-" if not base or base["best"] is None or r["best"] is None or (sampler, rule) == ("random", "none") \
        else f"{100 * (r['best'] - base['best']):+.2f} pt"
    wall = "-" if r["wall"] is None else f"{r['wall'] / 60:.1f} min"
    print(f"| {sampler} | {rule} | {seed} | {r['done']} / {r['pruned']} | {r['epochs']} / {r['full']} | "
          f"{r['epochs'] / r['full']:.0%} | {wall} | {pct(r['best'])} | {pct(r['top'])} | {delta} |")

# Means over seeds per variant.
print()
print("| sampler | pruning | seeds | mean epochs ratio | mean best test acc | mean change vs random, no pruning | worst change |")
print("|---|---|---|---|---|---|---|")
variants = sorted({(s, p) for (s, p, _) in rows}, key=lambda v: (v[0] != "random", v[1] != "none", v[1]))
for v in variants:
    rs = [(seed, rows[(v[0], v[1], seed)]) for (s, p, seed) in rows if (s, p) == v]
    ratio = sum(r["epochs"] / r["full"] for _, r in rs) / len(rs)
    accs = [r["best"] for _, r in rs if r["best"] is not None]
    deltas = [r["best"] - rows[("random", "none", seed)]["best"] for seed, r in rs
              if ("random", "none", seed) in rows and r["best"] is not None and v != ("random", "none")]
    mean_acc = pct(sum(accs) / len(accs)) if accs else "-"
    md = f"{100 * sum(deltas) / len(deltas):+.2f} pt" if deltas else "-"
    worst = f"{100 * min(deltas):+.2f} pt" if deltas else "-"
    print(f"| {v[0]} | {v[1]} | {len(rs)} | {ratio:.0%} | {mean_acc} | {md} | {worst} |")
