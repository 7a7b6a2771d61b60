"""index.html of `rnas report`: seven sections (models table, MACs vs accuracy, training cost vs accuracy,
accuracy vs eps, search runs, retrain runs, study steps), every figure drawn by ``rnas/report/figures.py``
into the output directory and embedded as a data: URI. Importing it imports matplotlib (the optional extra
``.[report]``)."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from rnas import __version__
from rnas.nets.graph import draw_arch_graph
from rnas.report import figures
from rnas.report.runs import Inputs, Run
from rnas.report.tables import TABLE_ATTACKS, adversarial_training, sweeps


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def escape(value) -> str:
    """HTML text of a value (None -> empty)."""
    return html.escape("" if value is None else str(value))


def slug(name: str) -> str:
    """A run or model name as part of a file name: s3/rnas-cl -> s3-rnas-cl."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def _eps_text(eps: float) -> str:
    scaled = eps * 255
    return f"{round(scaled)}/255" if abs(scaled - round(scaled)) < 1e-6 else f"{eps:g}"


def _number(value, digits: int | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:,}" if digits is None else f"{value:.{digits}f}"


def _html_table(headers: list[str], rows: list[list[str]], attrs: str = "") -> str:
    """A table from already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: Path | None, caption: str) -> str:
    """The PNG embedded as a data: URI, linked to its file in DIR."""
    if path is None:
        return ""
    return (f'<figure><a href="{escape(path.name)}"><img src="{_png_data_uri(path)}" alt="{escape(caption)}"></a>'
            f"<figcaption>{escape(caption)} <code>{escape(path.name)}</code></figcaption></figure>")


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _models_section(table: dict) -> str:
    """Section 1: one row per model at the main eps; n in the header when a column has one n, else per cell."""
    if not table["models"]:
        return _note("No models: give retrain run dirs or a study dir.")
    cols = table["columns"]
    ns = {c["key"]: {(m["accuracy"][c["key"]]["n"], m["accuracy"][c["key"]].get("split")) for m in table["models"]
                     if c["key"] in m["accuracy"]} for c in cols}

    def where(n_split: tuple) -> str:
        """n=2000 report: how many images of which split (val, select, report, test) a number is on."""
        return f"n={n_split[0]}" + (f" {n_split[1]}" if n_split[1] else "")
    headers = ["model", "arm", "fine-tune", "params", "MACs", "cost (CE ep.)", "GMAC-epochs", "seconds"] + [
        escape(c["title"]) + (f" <br><small>{where(next(iter(ns[c['key']])))}</small>" if len(ns[c["key"]]) == 1
                              else "") for c in cols]
    rows = []
    for m in table["models"]:
        cost = m.get("cost") or {}
        cells = [escape(m["name"]), escape(m["arm"]), escape(m["finetune"] or "–"), _number(m["params"]),
                 _number(m["macs"]), _number(cost.get("ce_epochs"), 2),
                 _number(None if cost.get("mac_epochs") is None else cost["mac_epochs"] / 1e9, 2),
                 _number(cost.get("seconds"), 0)]
        for c in cols:
            got = m["accuracy"].get(c["key"])
            cells.append("–" if got is None else f"{got['accuracy']:.2f}"
                         + (f" <small>{where((got['n'], got.get('split')))}</small>" if len(ns[c["key"]]) > 1
                            else ""))
        rows.append(cells)
    missing = [f for m in table["models"] for f in m["missing_evals"]]
    text = (f"<p>Accuracy (%) at eps = {_eps_text(table['main_eps'])} (l∞; clean at 0). "
            "Columns marked (norm.) come from evals whose eps is in the model's normalized input space. "
            "Under each column: the images its numbers are on (n and split: report, the held-out split nothing "
            "chose on; select, the one runs chose on; val, the tail of train; test, the official test split). "
            "Cost: measured training compute in CE-epoch equivalents and in MAC-epochs (training MACs per "
            "training image), and wall-clock training seconds. "
            "Params and MACs from the eval JSON (arch.json before any eval). Same numbers: "
            '<a href="models.csv">models.csv</a>, <a href="models.json">models.json</a>.</p>')
    return text + _html_table(headers, rows, 'id="models"') + (
        _note(f"Eval files listed but not written yet: {', '.join(missing)}") if missing else "") \
        + _seeds_table(table) + _paired_table(table)


def _seeds_table(table: dict) -> str:
    """Mean ± sample sd over the seeds of the models that differ only in their seed (none: nothing)."""
    if not table["over_seeds"]:
        return ""
    cols = table["columns"]
    rows = []
    for group in table["over_seeds"]:
        cells = [escape(group["name"]), escape(group["arm"]), escape(group["finetune"] or "–"),
                 escape(", ".join(map(str, group["seeds"])))]
        for c in cols:
            got = group["accuracy"].get(c["key"])
            cells.append("–" if got is None else f"{got['mean']:.2f}" + (
                "" if got["sd"] is None else f" ± {got['sd']:.2f}") + (
                f" <small>({got['seeds']} seeds)</small>" if got["seeds"] != len(group["seeds"]) else ""))
        rows.append(cells)
    return ("<p>Over seeds: the models above that differ only in their seed, each column's mean ± sample "
            "standard deviation over the seeds.</p>"
            + _html_table(["model", "arm", "fine-tune", "seeds"] + [escape(c["title"]) for c in cols], rows,
                          'id="seeds"'))


def _paired_table(table: dict) -> str:
    """Every two arms of one net under the same seeds: A minus B over the seeds with its 95 % t-interval, the
    verdict, and McNemar's test pooled over the seeds (none: nothing)."""
    if not table.get("paired"):
        return ""
    titles = {c["key"]: c["title"] for c in table["columns"]}
    rows = []
    for pair in table["paired"]:
        for key, c in pair["columns"].items():
            interval = "–" if c["interval"] is None else f"[{c['interval'][0]:+.2f}, {c['interval'][1]:+.2f}]"
            pooled = c["mcnemar"]
            rows.append([escape(pair["a"]), escape(pair["b"]), escape(titles.get(key, key)),
                         escape(f"{c['split']} n={'/'.join(map(str, c['n']))}"),
                         escape(", ".join(map(str, c["seeds"]))),
                         f"{c['mean']:+.2f}", interval, escape(c["verdict"]),
                         "–" if pooled is None else f"{pooled['only_a']} / {pooled['only_b']}",
                         "–" if pooled is None else f"{pooled['p']:.3g}"])
    return ("<p>Paired: for every two arms of one net, A minus B in points over the seeds both ran, its 95 % "
            "t-interval over the seeds (n − 1 degrees of freedom), the verdict (wins: the interval is above zero; "
            "loses: below; tie otherwise) and McNemar's exact test on the images only A / only B got right, pooled "
            'over the seeds. Same numbers: <a href="paired.csv">paired.csv</a>, models.json "paired".</p>'
            + _html_table(["A", "B", "column", "images", "seeds", "A − B", "95 % interval", "verdict",
                           "only A / only B", "McNemar p"], rows, 'id="paired"'))


def _robust_attack(table: dict) -> str | None:
    """AutoAttack when at least as many models have it as PGD-20, else PGD-20 (pixel protocol)."""
    count = {a: sum(a in m["accuracy"] for m in table["models"]) for a in ("autoattack", "pgd20")}
    if not any(count.values()):
        return None
    return "autoattack" if count["autoattack"] >= count["pgd20"] else "pgd20"


def _pareto_section(table: dict, out: Path) -> str:
    robust = _robust_attack(table)
    points = [{"name": m["name"], "arm": m["arm"], "finetune": m.get("finetune"), "macs": m["macs"],
               "clean": m["accuracy"].get("clean", {}).get("accuracy"),
               "robust": m["accuracy"].get(robust, {}).get("accuracy") if robust else None} for m in table["models"]]
    robust_label = robust and TABLE_ATTACKS[robust]
    if robust and len({p["macs"] for p in points if p["macs"]}) == 1:  # the arms of one net: MACs say nothing
        path = figures.clean_vs_robust(points, robust_label, out / "pareto.png")
        if path is not None:
            return _figure(path, f"Every model has the same MACs: clean against {robust_label} accuracy at eps "
                                 f"{_eps_text(table['main_eps'])}, one colour per arm and fine-tune.")
    path = figures.pareto(points, robust_label, out / "pareto.png")
    if path is None:
        return _note("No model has both MACs and an accuracy yet.")
    return _figure(path, f"MACs vs clean and {robust_label} accuracy at "
                         f"eps {_eps_text(table['main_eps'])}; stars: the Pareto front (fewer MACs, higher accuracy).")


def _cost_section(table: dict, out: Path) -> str:
    robust = _robust_attack(table)
    points = [{"name": m["name"], "arm": m["arm"], "finetune": m.get("finetune"),
               "ce_epochs": (m.get("cost") or {}).get("ce_epochs"),
               "clean": m["accuracy"].get("clean", {}).get("accuracy"),
               "robust": m["accuracy"].get(robust, {}).get("accuracy") if robust else None} for m in table["models"]]
    robust_label = robust and TABLE_ATTACKS[robust]
    path = figures.pareto(points, robust_label, out / "cost.png", cost="ce_epochs",
                          x_label="training cost (CE-epoch equivalents)", x_scale=1.0)
    if path is None:
        return _note("No model has both a measured training cost (metrics.jsonl cost/…) and an accuracy yet.")
    return _figure(path, f"Training cost vs clean and {robust_label} accuracy at eps {_eps_text(table['main_eps'])}: "
                         "cost in epochs of plain CE training of each net (student forward and backward MACs, "
                         "attack steps and teacher forwards included, as measured); stars: the Pareto front.")


def _sweep_section(series: list[dict], out: Path) -> str:
    path = figures.eps_sweep(series, out / "eps_sweep.png")
    if path is None:
        return _note("No eval has one attack at several eps (rnas eval --eps-sweep ...).")
    return _figure(path, "Robust accuracy vs eps (eps 0: the same eval's clean accuracy when it has one).")


def _run_heading(run: Run, what: str) -> str:
    """A run's heading: name, dir, ``what`` (already escaped), epochs done of planned, last val accuracy (%)."""
    last = run.records[-1] if run.records else {}
    return (f"<h3>{escape(run.name)}</h3><p><code>{escape(run.dir)}</code>: {what}, "
            f"{len(run.records)}/{escape(run.config.get('epochs'))} epochs"
            + (f", last val acc {last['val_acc']:.2f} %" if last.get("val_acc") is not None else "") + "</p>")


def _search_section(run: Run, out: Path) -> str:
    """Section 4 for one search: loss terms, temperatures and MACs, width probabilities, tutors, derived net."""
    base = "search-" + slug(run.name).removeprefix("search-")
    parts = [_run_heading(run, f"space {escape(run.config.get('space'))}, teacher {escape(run.teacher)}")]
    if not run.records:
        return parts[0] + _note("No metrics.jsonl records yet.")
    parts.append(_figure(figures.curves(run.records, figures.SEARCH_LOSS_PANELS, f"{run.name}: loss terms per epoch",
                                        out / f"{base}-losses.png"), "Loss terms of the weight and arch steps."))
    parts.append(_figure(figures.curves(run.records, figures.SEARCH_SCHEDULE_PANELS,
                                        f"{run.name}: temperatures, MACs, accuracy", out / f"{base}-schedule.png"),
                         "Gumbel temperatures, expected and argmax MACs, val accuracy of the argmax net."))
    arch = run.archs.get("arch.json") or next(iter(run.archs.values()), None)
    choices = [c for c in arch["width_choices"] if len(c) > 1] if arch else None
    widths = figures.width_probs(run.records, choices, f"{run.name}: width probabilities per block",
                                 out / f"{base}-widths.png")
    parts.append(_figure(widths, "Probability of each width choice per epoch (width_probs of metrics.jsonl, or "
                                 "of its TensorBoard scalars width/blockNN/W for a run written before that field).")
                 if widths else _note("Width probabilities: neither in this run's metrics.jsonl nor in its "
                                      "TensorBoard event files (tb/)."))
    if arch is None:
        return "".join(parts) + _note(f"No arch.json: run rnas derive {run.dir} for tutors and the derived net.")
    parts.append(_figure(figures.tutor_heatmap(arch, f"{run.name}: tutor probabilities", out / f"{base}-tutors.png"),
                         "Tutor probability g_ij of each student tap (rows) over the teacher layers (columns)."))
    parts.append(_figure(figures.derived_widths(run.archs, f"{run.name}: derived widths", out / f"{base}-arch.png"),
                         "Derived architecture(s): width per block against the block's choices."))
    parts.append(_figure(draw_arch_graph(arch, out / f"{base}-graph.png"),
                         "Student -> tutor graph of the derived net."))
    return "".join(parts)


def _retrain_section(run: Run, out: Path) -> str:
    cfg = run.config
    at = adversarial_training(cfg)
    head = _run_heading(run, f"baseline {escape(cfg.get('baseline'))}{'' if at == 'none' else ', AT ' + at}"
                             f"{' + MBN' if cfg.get('mbn') else ''}")
    path = figures.curves(run.records, figures.RETRAIN_PANELS, f"{run.name}: training curves",
                          out / f"retrain-{slug(run.name)}-curves.png")
    return head + (_figure(path, "Loss terms, val accuracy, attention share of the weight gradient, lr per epoch.")
                   if path else _note("No metrics.jsonl records yet."))


def _overlay_section(runs: list[Run], out: Path) -> str:
    path = figures.overlay([(r.name, r.records) for r in runs], out / "retrain-overlay.png")
    return _figure(path, "Every retrain run on shared axes, one colour per run.") if path else ""


def _steps_section(path: Path, study: dict) -> str:
    steps = study.get("steps", [])
    states = {}
    for step in steps:
        states[step["state"]] = states.get(step["state"], 0) + 1
    rows = [[escape(s["name"]), escape(s["kind"]), f'<span class="state-{escape(s["state"])}">{escape(s["state"])}'
             "</span>", _number(s.get("seconds"), 1), escape(s.get("error") or "")] for s in steps]
    summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return (f"<h3>{escape(study.get('name', path.name))}</h3><p><code>{escape(path)}</code>: {len(steps)} steps "
            f"({escape(summary)})</p>" + _html_table(["step", "kind", "state", "seconds", "error"], rows,
                                                       'class="steps"'))


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1250px;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f2f2f2}td{text-align:right}td:first-child,td:nth-child(2),td:nth-child(3){text-align:left}
.steps td{text-align:left}small{color:#666}.note{color:#777;font-style:italic}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.state-failed{color:#b00;font-weight:bold}.state-blocked{color:#b60}.state-done{color:#080}
h2{border-bottom:2px solid #ddd;margin-top:1.6em}code{font-size:.9em}"""


def render_page(inputs: Inputs, table: dict, out: Path, sources: list) -> str:
    """index.html: the seven sections in order, each figure drawn into ``out`` and embedded."""
    sections = [("1. Models", _models_section(table)), ("2. MACs vs accuracy", _pareto_section(table, out)),
                ("3. Training cost vs accuracy", _cost_section(table, out)),
                ("4. Robust accuracy vs eps", _sweep_section(sweeps(inputs.models), out)),
                ("5. Search runs", "".join(_search_section(r, out) for r in inputs.searches)
                 or _note("No search run among the inputs.")),
                ("6. Retrain runs", _overlay_section(inputs.retrains, out)
                 + "".join(_retrain_section(r, out) for r in inputs.retrains)
                 or _note("No retrain run with metrics among the inputs.")),
                ("7. Study steps", "".join(_steps_section(p, s) for p, s in inputs.studies)
                 or _note("No study among the inputs."))]
    title = ", ".join(s.get("name", str(p)) for p, s in inputs.studies) or ", ".join(Path(s).name for s in sources)
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>rnas report: {escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>rnas report: {escape(title)}</h1>"
            f"<p>rnas {escape(__version__)}; inputs: " + ", ".join(f"<code>{escape(s)}</code>" for s in sources)
            + '. Per search: <a href="searches.json">searches.json</a>.</p>'
            + "".join(f"<h2>{name}</h2>{body}" for name, body in sections) + "</body></html>\n")
