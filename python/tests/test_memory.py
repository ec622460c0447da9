"""Peak memory: np.asarray(A).sum() over an array 8x the RAM budget stays
within budget + one transaction + interpreter overhead (in a child
process, reading ru_maxrss)."""
import json

from conftest import run_child

MiB = 1 << 20
BUDGET = 32 * MiB
SIZE = 8 * BUDGET  # 256 MiB of f8

WRITE = r'''
import sys, numpy as np, wendelin_rs as wr
db = wr.DB(sys.argv[1], ram_budget=int(sys.argv[2]))
c = db.open()
n = int(sys.argv[3]) // 8 // 1024
A = c.create_array("A", (n, 1024), "f8")
c.commit()
step = n // 8          # one budget's worth per transaction
for lo in range(0, n, step):
    A[lo:lo + step] = np.arange(lo * 1024, (lo + step) * 1024, dtype="f8").reshape(-1, 1024)
    c.commit()
print("written")
'''

READ = r'''
import sys, json, resource, numpy as np, wendelin_rs as wr
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
db = wr.DB(sys.argv[1], ram_budget=int(sys.argv[2]))
A = db.open().root["A"]
base = peak()
total = np.asarray(A).sum()
after_sum = peak()
s = A.stats()
print(json.dumps({"base": base, "sum_peak": after_sum, "stats_peak": peak(), "total": float(total),
                  "stats_sum": s["sum"]}))
'''


def test_sum_over_8x_the_budget_stays_within_budget(path):
    run_child(WRITE, path, BUDGET, SIZE)
    out = json.loads(run_child(READ, path, BUDGET, SIZE).strip().splitlines()[-1])
    n = SIZE // 8
    want = n * (n - 1) / 2
    assert out["total"] == want and out["stats_sum"] == want
    # budget + one transaction's blocks in flight (read-ahead, recycled
    # buffers: a quarter budget + 4 blocks) + slack for thread stacks
    limit = BUDGET + BUDGET // 4 + 4 * 2 * MiB + 24 * MiB
    grew = out["sum_peak"] - out["base"]
    grew_stats = out["stats_peak"] - out["base"]
    print(f"peak RSS growth: sum {grew / MiB:.1f} MiB, stats {grew_stats / MiB:.1f} MiB, "
          f"array {SIZE / MiB:.0f} MiB, budget {BUDGET / MiB:.0f} MiB, limit {limit / MiB:.0f} MiB")
    assert grew < limit, out
    assert grew_stats < limit, out
