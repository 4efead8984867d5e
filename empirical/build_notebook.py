"""Build notebooks/03-empirical.ipynb with nbformat (run: python -m empirical.build_notebook [--execute]).

The notebook renders the committed end-to-end result (``results/e2e/run``: report, figures, JSON) and
recomputes the headline correlations from the stored margin vectors with :mod:`lls_theory.stats`, so a
reader can check that the table was not typed in. It needs no model and runs in seconds.
"""

import sys
from pathlib import Path


CELLS = [
    ("md", "# 03 — LLS on real models: the end-to-end result\n\n"
           "Teacher SmolLM2-135M-Instruct with the paper's owl system prompt selects an LLS subset of HH-RLHF "
           "(harmless-base test); students SmolLM2-135M-Instruct (same model as the teacher) and Gemma-3-270M "
           "(another family) are DPO-trained on it and on a same-size random subset. This notebook renders the "
           "committed run in `results/e2e/run` (made by `lls experiment --config empirical/configs/owl-hh.toml "
           "--out results/e2e/run`; about 1 h 20 min on 2 CPU cores) and needs no model."),
    ("code", "import json\nfrom pathlib import Path\n\nimport numpy as np\nfrom IPython.display import Image, Markdown, display\n\n"
             "from lls_theory.stats import cosine, pearson, spearman\n\n"
             "RUN = Path('..') / 'results' / 'e2e' / 'run'\n"
             "summary = json.loads((RUN / 'summary.json').read_text()) if (RUN / 'summary.json').is_file() else None\n"
             "print('committed result found' if summary else f'no result in {RUN}: run the command above')"),
    ("md", "## Table 1 analogue\nFinal-checkpoint correlations on the 500 held-out pairs (95% bootstrap CIs). "
           "`z_s`: the student's own system-prompt margin shift; `z_T`: the teacher's (cross-family student only)."),
    ("code", "if summary:\n"
             "    print(f\"{'student':8s} {'subset':7s} {'vs':4s} {'cosine':>8s} {'pearson':>8s}  95% CI            {'spearman':>8s} {'p':>7s}\")\n"
             "    for r in summary['correlations']:\n"
             "        print(f\"{r['student']:8s} {r['arm']:7s} {r['ref']:4s} {r['cosine']:8.3f} {r['pearson']:8.3f}  \"\n"
             "              f\"[{r['pearson_ci'][0]:+.3f}, {r['pearson_ci'][1]:+.3f}]  {r['spearman']:8.3f} {r['pearson_p']:7.4f}\")\n"
             "    print('paper (owls, OLMo2-1B student):', summary['paper_table1_owls'])\n"
             "    display(Image(filename=str(RUN / 'table1.png')))"),
    ("md", "## Table 1 beside the paper\nOne row per student, one column per trait (one here): held-out Pearson "
           "of the reference r with z_M for the LLS student [95% CI], the random-subset control, the paired "
           "LLS − random difference [95% CI], and the paper's number. r = z_T for the student that is not the "
           "teacher, z_s (= z_T) for the teacher's own model. `empirical.report.table1` recomputes every point "
           "estimate from the stored vectors and refuses a JSON whose stored statistics disagree; the cell below "
           "checks it once more with numpy."),
    ("code", "from empirical.report.table1 import fig19, fig19_markdown, load_run, table1, table1_markdown\n\n"
             "if summary:\n"
             "    run = load_run(RUN)\n"
             "    tab = table1(run)\n"
             "    for row in tab['rows']:\n"
             "        for trait, cell in row['cells'].items():\n"
             "            c = run.correlate[(trait, row['student'])]\n"
             "            zm = np.array(c['arms']['lls']['z_M'][str(c['arms']['lls']['checkpoints'][-1]['step'])])\n"
             "            assert abs(np.corrcoef(np.array(c[row['ref']]), zm)[0, 1] - cell['lls']['pearson']) < 1e-9\n"
             "    display(Markdown('\\n'.join(table1_markdown(tab))))\n"
             "    display(Markdown('\\n'.join(fig19_markdown(fig19(run)))))"),
    ("md", "## Recompute from the stored vectors\nThe headline numbers again, straight from `correlate.json` "
           "(z vectors per pair) with `lls_theory.stats` — they must match the table."),
    ("code", "if summary:\n"
             "    for student in sorted({r['student'] for r in summary['correlations']}):\n"
             "        c = json.loads((RUN / 'students' / student / 'correlate.json').read_text())\n"
             "        z_s = np.array(c['z_s'])\n"
             "        for arm, rep in c['arms'].items():\n"
             "            last = str(rep['checkpoints'][-1]['step'])\n"
             "            z_m = np.array(rep['z_M'][last])\n"
             "            row = next(r for r in summary['correlations'] if (r['student'], r['arm'], r['ref']) == (student, arm, 'z_s'))\n"
             "            assert abs(pearson(z_s, z_m) - row['pearson']) < 1e-9 and abs(cosine(z_s, z_m) - row['cosine']) < 1e-9\n"
             "            print(f'{student:8s} {arm:7s} n={z_s.size} cosine {cosine(z_s, z_m):+.3f} pearson {pearson(z_s, z_m):+.3f} '\n"
             "                  f'spearman {spearman(z_s, z_m):+.3f}  mean z_M {z_m.mean():+.3f}')"),
    ("md", "## Does LLS beat the random control?\nThe difference of the final correlations on the same held-out "
           "pairs, with a paired bootstrap (pairs resampled jointly) — recomputed here from the stored vectors."),
    ("code", "from lls_theory.stats import paired_difference\n\n"
             "if summary:\n"
             "    for student, con in summary['lls_minus_random'].items():\n"
             "        c = json.loads((RUN / 'students' / student / 'correlate.json').read_text())\n"
             "        final = {a: np.array(r['z_M'][str(r['checkpoints'][-1]['step'])]) for a, r in c['arms'].items()}\n"
             "        for ref, stats in con.items():\n"
             "            d = paired_difference('pearson', np.array(c[ref]), final['lls'], final['random'], n_boot=2000, seed=0)\n"
             "            assert abs(d['diff'] - stats['pearson']['diff']) < 1e-9\n"
             "            print(f\"{student:8s} corr({ref}, z_M): LLS - random = {d['diff']:+.3f} \"\n"
             "                  f\"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], one-sided p = {d['p']:.4f}\")"),
    ("md", "## Trajectory (Fig. 3 analogue)"),
    ("code", "if summary:\n    for f in sorted(RUN.glob('trajectory-*.png')):\n        print(f.name)\n        display(Image(filename=str(f)))"),
    ("md", "## Behaviour (Fig. 2 analogue)\nShare of sampled answers to 10 general-knowledge prompts that mention the "
           "target (Wilson 95% CIs), and the log-prob probe P(owl) among 11 animals."),
    ("code", "if summary:\n"
             "    for student, conds in summary['behaviour'].items():\n"
             "        for cond, v in conds.items():\n"
             "            lo, hi = v['mention_ci']\n"
             "            print(f\"{student:8s} {cond:7s} mention {v['mention_rate']:.3f} [{lo:.3f}, {hi:.3f}]  probe P(owl) {v['p_target']:.3f}\")\n"
             "    display(Image(filename=str(RUN / 'mention.png')))"),
    ("md", "A few sampled answers of each student's LLS model (first answer to each of three prompts):"),
    ("code", "if summary:\n"
             "    for student in summary['behaviour']:\n"
             "        e = json.loads((RUN / 'students' / student / 'eval.json').read_text())\n"
             "        for k in range(3):\n"
             "            print(f'[{student} / lls] {e[\"settings\"][\"prompts\"][k]}\\n  -> {e[\"conditions\"][\"lls\"][\"answers\"][k][0][:300]}\\n')"),
    ("md", "## Many traits: Table 1 and the Figure-19 view\nWhen a many-trait run is committed under "
           "`results/table1/` (`lls experiment --config empirical/configs/animals-hh.toml`), this renders its "
           "Table 1 and Figure-19 view and recomputes the angles between each trait's fine-tuned z_M and its "
           "reference with numpy (arccos of the cosine in the space of held-out pairs)."),
    ("code", "MANY = [p.parent for p in sorted((Path('..') / 'results' / 'table1').glob('**/config.json'))\n"
             "        if (p.parent / 'traits').is_dir()]\n"
             "if not MANY:\n"
             "    print('no many-trait result committed yet under results/table1/')\n"
             "for root in MANY:\n"
             "    run = load_run(root)\n"
             "    f19 = fig19(run)\n"
             "    for s, d in f19.items():\n"
             "        for t in d['traits']:\n"
             "            c = run.correlate[(t, s)]\n"
             "            zm = np.array(c['arms']['lls']['z_M'][str(c['arms']['lls']['checkpoints'][-1]['step'])])\n"
             "            r = np.array(c[d['ref']])\n"
             "            ang = np.degrees(np.arccos(zm @ r / np.linalg.norm(zm) / np.linalg.norm(r)))\n"
             "            assert abs(ang - d['angles_deg'][t]) < 1e-6\n"
             "    print(root)\n"
             "    display(Markdown('\\n'.join(table1_markdown(table1(run)))))\n"
             "    display(Markdown('\\n'.join(fig19_markdown(f19))))\n"
             "    for f in ('table1.png', 'fig19.png'):\n"
             "        if (root / f).is_file():\n"
             "            display(Image(filename=str(root / f)))"),
    ("md", "The full write-up, with the settings chosen to fit 2 CPU cores, is `results/e2e/run/report.md` and "
           "`results/e2e/README.md`."),
]


def main(argv=None) -> int:
    from lls_common.notebook import write_notebook

    argv = sys.argv[1:] if argv is None else argv
    write_notebook(CELLS, Path(__file__).resolve().parent.parent / "notebooks" / "03-empirical.ipynb", execute="--execute" in argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
