"""Reads the billing dataset with DuckDB and with pyarrow (independently of
our Rust reader) and prints what the billing test compares, as JSON.
Decimals are printed as strings so nothing is rounded on the way."""
import json
import sys
from decimal import Decimal

import duckdb
import pyarrow.dataset as ds

root = sys.argv[1]
glob = f"{root}/billing/**/*.parquet"
con = duckdb.connect()
q = f"read_parquet('{glob}', hive_partitioning = true)"
rows = con.execute(
    f"select job_id, kind, seconds, unit_price_usd, amount_usd, amount_micro, price_version, date from {q}"
).fetchall()
mismatch = []
for job_id, kind, seconds, unit, amount, micro, version, date in rows:
    expect = unit * seconds
    if amount != expect or Decimal(micro) / Decimal(1_000_000) != amount:
        mismatch.append([job_id, str(amount), str(expect), micro])
duck_sum = con.execute(f"select coalesce(sum(amount_usd), 0) from {q} where kind = 'charge'").fetchone()[0]
duck_all = con.execute(f"select coalesce(sum(amount_usd), 0) from {q}").fetchone()[0]
duck_by_tenant = con.execute(
    f"select tenant, sum(amount_micro) from {q} group by tenant order by tenant"
).fetchall()

t = ds.dataset(f"{root}/billing", format="parquet", partitioning="hive").to_table()
kinds = t.column("kind").to_pylist()
amounts = t.column("amount_usd").to_pylist()
pa_sum = sum((a for a, k in zip(amounts, kinds) if k == "charge"), Decimal(0))
print(json.dumps({
    "duckdb_rows": len(rows),
    "duckdb_charges": sorted(r[0] for r in rows if r[1] == "charge"),
    # Anything in the ledger that is not a charge (there must be none).
    "duckdb_other_kinds": sorted(r[0] for r in rows if r[1] != "charge"),
    "duckdb_sum_charges": str(duck_sum),
    "duckdb_sum_all": str(duck_all),
    "duckdb_micro_by_tenant": {t: int(m) for t, m in duck_by_tenant},
    "duckdb_dates": sorted({str(r[7]) for r in rows}),
    "mismatch": mismatch,
    "pyarrow_rows": t.num_rows,
    "pyarrow_sum_charges": str(pa_sum),
    "pyarrow_columns": t.column_names,
}))
