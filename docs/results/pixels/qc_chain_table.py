"""Per-seed success rates of the pixel-chain runs (eval/success_rate, 50 episodes each), as a
table and as JSON/CSV rows."""
import csv, glob, json, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else "/tmp/pxo/runs"
out_csv = sys.argv[2] if len(sys.argv) > 2 else None
rows, table = [], {}
for f in sorted(glob.glob(f"{root}/chain_h*_s*/metrics.csv")):
    h, s = map(int, re.search(r"chain_h(\d+)_s(\d+)", f).groups())
    pts = {}
    for r in csv.DictReader(open(f)):
        if not r.get("eval/success_rate"):
            continue
        key = (r["phase"], int(r["env_steps"]) if r["phase"] == "online" else int(r["step"]))
        pts[key] = float(r["eval/success_rate"])
        rows.append({"h": h, "seed": s, "phase": key[0], "step": key[1],
                     "success_rate": pts[key]})
    summ = f.replace("metrics.csv", "summary.json")
    ups = json.load(open(summ)).get("updates_per_s") if glob.glob(summ) else None
    table.setdefault(h, {})[s] = (pts, ups)
order = ["pretrain", "offline", "online"]
for h in sorted(table, reverse=True):
    print(f"h={h}")
    keys = sorted({k for pts, _ in table[h].values() for k in pts},
                  key=lambda k: (order.index(k[0]), k[1]))
    print("  seed  " + "  ".join(f"{p[:3]}{n:>5}" for p, n in keys) + "  upd/s")
    for s, (pts, ups) in sorted(table[h].items()):
        cells = "  ".join(f"{pts[k]:8.2f}" if k in pts else "       -" for k in keys)
        print(f"  {s:>4}  {cells}  {'-' if ups is None else f'{ups:.1f}'}")
    means = [sum(t[0][k] for t in table[h].values() if k in t[0]) /
             max(1, sum(k in t[0] for t in table[h].values())) for k in keys]
    print("  mean  " + "  ".join(f"{m:8.2f}" for m in means))
if out_csv:
    with open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["h", "seed", "phase", "step", "success_rate"])
        w.writeheader()
        w.writerows(rows)
