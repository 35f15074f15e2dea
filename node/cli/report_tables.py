"""The compensation report (state/recovery/compensation.py) for operators: CSV and a table.

The report itself is computed by the node (``admin compensation-report``); the CLI writes it
as JSON and CSV and prints the table. Operators review (and may edit) the amounts before
``admin compensate`` pays them.
"""

from __future__ import annotations

from typing import Any

CSV_COLUMNS = ("account", "equity_counterfactual", "equity_recovered", "harm",
               "compensation", "txs_excluded", "collateral_recovered",
               "collateral_abandoned",
               "liquidated_abandoned", "liquidated_recovered", "liquidated_only_abandoned",
               "orders_cancelled_by_operator", "txs_dropped", "txs_diverged")


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return "" if v is None else str(v)


def to_csv(report: dict[str, Any]) -> str:
    lines = [",".join(CSV_COLUMNS)]
    for r in report["accounts"]:
        lines.append(",".join(_cell(r[c]) for c in CSV_COLUMNS))
    return "\n".join(lines) + "\n"


def to_table(report: dict[str, Any]) -> str:
    t = report["totals"]
    m = report["measured_at"]
    out = [f"compensation report {report['id']} for era {report['era']} "
           f"(rolled back {report['fork']['from_height']} -> {report['fork']['to_height']}; "
           f"measured at recovered height {m['recovered_height']} against the "
           f"counterfactual at {m['counterfactual_height']})",
           f"{'account':<18} {'equity cf.':>16} {'equity rec.':>16} {'harm':>14} "
           f"{'pay':>14} {'cancelled':>9} {'dropped':>7} {'liq. bad fork':>13}"]
    for r in report["accounts"]:
        if r["harm"] == "0" and not r["liquidated_abandoned"] and not \
                r["orders_cancelled_by_operator"] and not r["txs_dropped"]:
            continue  # unaffected accounts stay in the JSON and CSV, not in the table
        out.append(f"{r['account'][:16]:<18} {r['equity_counterfactual']:>16} "
                   f"{r['equity_recovered']:>16} {r['harm']:>14} {r['compensation']:>14} "
                   f"{r['orders_cancelled_by_operator']:>9} {r['txs_dropped']:>7} "
                   f"{str(r['liquidated_abandoned']):>13}")
    for x in report["liquidated_only_on_abandoned_fork"]:
        out.append(f"liquidated only on the bad fork: {x['account']} (penalty spared "
                   f"{x['penalty_spared']})")
    for x in report["external_effects"]:
        out.append(f"EXTERNAL EFFECT (needs a decision): {x['kind']} of {x['amount']} for "
                   f"{x['account']} in abandoned block {x['abandoned_height']}, "
                   f"{x['recovered']} on the recovered chain (tx {x['tx']})")
    out.append(f"accounts {t['accounts']}, to compensate {t['accounts_to_compensate']}, "
               f"total {t['compensation_total']} micro-USDC, liquidated only on the bad fork "
               f"{t['liquidated_only_on_abandoned_fork']}, external effects "
               f"{t['external_effects']}")
    return "\n".join(out)
