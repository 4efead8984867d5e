#!/usr/bin/env bash
# Mutation testing (mutmut 3) as a standing check — one command, outside .ci/run (it takes minutes).
#
#   scripts/mutation.sh [lls_theory|empirical] [MODULE ...]
#
#   lls_theory (default): mutates lls_theory/{margins,selection,stats,theorem,wellbehaved,representation}.py
#                         and runs the theory/proof tests (tests/test_theory_*.py, tests/test_proof_*.py) and
#                         tests/test_selection_rule.py (the per-row rule).
#   empirical:            mutates the weight / selection / correlate code of empirical/stages/ (correlate.py whole;
#                         of build.py only the functions in SCOPE_build below: the weight and record writer
#                         of `lls score`, reading score files, and `lls select`) and runs the fast (not model,
#                         not slow) tests of those (test_emp_{cli_data,train,experiment,evaluate}.py,
#                         test_emp_correlate_units.py, test_emp_build_units.py) plus
#                         tests/test_theory_margins_selection.py. The rest of build.py (model loading,
#                         tokenisation, chunked / resumable / multi-process scoring, run_score) is out of scope:
#                         its tests load a model (pytest -m model, minutes per run), too slow for one run per
#                         mutant; its mutants are not run and are reported as "out of scope", not in the score.
#   MODULE ...:           only these modules of the target, e.g. `scripts/mutation.sh lls_theory margins stats`.
#   --survivors:          re-test only the mutants listed as not killed in the last mutation-score.json (after
#                         adding tests: killed mutants stay killed when tests are only added), plus any mutant
#                         never checked or invalidated by a source change.
#   --score-only:         recompute the score from the results already in the snapshot dir.
#
# The repository is never touched: the sources and tests are copied (a snapshot) into
# ${LLS_MUTATION_DIR:-/tmp/lls-mutation}/<target>, a [tool.mutmut] config is written there, and mutmut runs
# in that copy with one worker (the shared machine has 2 cores), one module at a time, each run bounded by
# ${LLS_MUTATION_TIMEOUT:-1800} seconds. The snapshot dir keeps mutmut's cache, so a rerun only re-tests
# functions whose code changed. Hypothesis runs with a fixed seed so a mutant's verdict is reproducible.
#
# Output: per-module and total counts (killed / survived / no tests / timeout), the score
# killed / (all − skipped), the surviving mutant names, and <workdir>/mutation-score.json.
# `cd <workdir> && ../../..(venv)/mutmut show NAME` prints a surviving mutant's diff.
# Exit status: 0 when the score reaches the target's threshold (lls_theory 90 %, empirical 80 %), 1 otherwise.
set -euo pipefail

TARGET="${1:-lls_theory}"
shift || true
REPO="${LLS_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PY="${LLS_PYTHON:-$REPO/.venv/bin/python}"
MUTMUT="$(dirname "$PY")/mutmut"
WORK="${LLS_MUTATION_DIR:-/tmp/lls-mutation}/$TARGET"
TIMEOUT="${LLS_MUTATION_TIMEOUT:-1800}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

case "$TARGET" in
  lls_theory)
    ALL_MODULES=(margins selection stats theorem wellbehaved representation)
    PKG=lls_theory
    DIR=lls_theory
    THRESHOLD=90
    MARK="not model"
    # test_selection_rule.py holds lls_select_best_pair_per_row's tests (a few of them go through empirical)
    TESTS=(tests/test_theory_*.py tests/test_proof_*.py tests/test_selection_rule.py)
    COPY=(lls_common lls_theory empirical)
    ;;
  empirical)
    ALL_MODULES=(build correlate)
    PKG=empirical
    DIR=empirical/stages
    THRESHOLD=80
    MARK="not model and not slow"
    # the tests of score records / select / correlate that need neither a model nor committed results/
    TESTS=(tests/test_emp_cli_data.py tests/test_emp_train.py tests/test_emp_experiment.py tests/test_emp_evaluate.py
           tests/test_theory_margins_selection.py tests/test_emp_correlate_units.py tests/test_emp_build_units.py)
    COPY=(lls_common lls_theory lls_cli empirical simulations)
    # build.py functions in scope (model-free: score records, the weight / record writer of `lls score` driven by
    # a fake scorer, `lls select`); every other function of build.py needs a model to be exercised.
    SCOPE_build=(_base_columns _score_chunk score_summary read_scores _trl row_ids select_file scores_reference
                 pairs_reference run_select)
    ;;
  *)
    echo "usage: scripts/mutation.sh [lls_theory|empirical] [MODULE ...]" >&2
    exit 2
    ;;
esac
MOD="${DIR//\//.}"  # dotted: empirical.stages
# LLS_MUTATION_TESTS="tests/a.py tests/b.py" overrides the test files (e.g. to re-test survivors against new,
# fast tests only: a mutant they kill is killed by the full suite too, so the score is a lower bound).
# LLS_MUTATION_SURVIVORS=FILE takes the survivor list from another run's mutation-score.json.
if [[ -n "${LLS_MUTATION_TESTS:-}" ]]; then read -r -a TESTS <<< "$LLS_MUTATION_TESTS"; fi
SURVIVORS=0
SCORE_ONLY=0
if [[ "${1:-}" == "--survivors" ]]; then SURVIVORS=1; shift; fi
if [[ "${1:-}" == "--score-only" ]]; then SCORE_ONLY=1; shift; fi
[[ $# -gt 0 ]] && MODULES=("$@") || MODULES=("${ALL_MODULES[@]}")
for m in "${MODULES[@]}"; do
  [[ -f "$REPO/$DIR/$m.py" ]] || { echo "mutation.sh: no module $DIR/$m.py" >&2; exit 2; }
done
# mutmut name patterns of a module: its in-scope functions (SCOPE_<module>), else every mutant of it
patterns() {
  local m=$1 var="SCOPE_$1[@]" f
  if declare -p "SCOPE_$m" >/dev/null 2>&1; then
    for f in "${!var}"; do echo "$MOD.$m.x_${f}__mutmut_*"; done
  else
    echo "$MOD.$m.*"
  fi
}
SCOPE_JSON="{"
for m in "${ALL_MODULES[@]}"; do
  declare -p "SCOPE_$m" >/dev/null 2>&1 && SCOPE_JSON+="\"$m\": [$(patterns "$m" | sed 's/.*/"&"/' | paste -sd,)], "
done
SCOPE_JSON="${SCOPE_JSON%, }}"
[[ -x "$MUTMUT" ]] || { echo "mutation.sh: $MUTMUT not found: .venv/bin/pip install 'mutmut>=3'" >&2; exit 2; }

# --- snapshot of the sources and tests (never the repo itself) -------------------------------------------
mkdir -p "$WORK/tests"
cd "$REPO"
for d in "${COPY[@]}"; do
  mkdir -p "$WORK/$d"
  # copy only changed files so that mutmut's cache stays valid across reruns
  (cd "$REPO/$d" && find . -name '*.py' -o -name '*.json' -o -name '*.toml' -o -name '*.txt' | grep -v __pycache__) |
    while read -r f; do
      mkdir -p "$WORK/$d/$(dirname "$f")"
      cmp -s "$REPO/$d/$f" "$WORK/$d/$f" || cp "$REPO/$d/$f" "$WORK/$d/$f"
    done
done
rm -rf "$WORK/tests"/test_*.py
cp tests/conftest.py "$WORK/tests/"
cat >> "$WORK/tests/conftest.py" <<'PYEOF'


# added by scripts/mutation.sh (only in the mutation snapshot): no Hypothesis deadlines on a loaded machine
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("mutation", deadline=None)
_hyp_settings.load_profile("mutation")
PYEOF
[[ -d tests/fixtures ]] && cp -r tests/fixtures "$WORK/tests/"
TEST_FILES=()
for t in "${TESTS[@]}"; do
  [[ -f "$t" ]] && cp "$t" "$WORK/tests/" && TEST_FILES+=("$t")
done

only=""
for m in "${ALL_MODULES[@]}"; do only+="\"$DIR/$m.py\", "; done
tests_toml=""
for t in "${TEST_FILES[@]}"; do tests_toml+="\"$t\", "; done
cat > "$WORK/pyproject.toml" <<EOF
# written by scripts/mutation.sh — do not edit (regenerated every run)
[tool.mutmut]
source_paths = ["$PKG"]
only_mutate = [${only%, }]
pytest_add_cli_args_test_selection = [${tests_toml%, }]
pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "--hypothesis-seed=0", "-m", "$MARK",
                       "--deselect", "tests/test_proof_cosine_adversary.py::test_cli_json_schema",
                       "--deselect", "tests/test_proof_cosine_adversary.py::test_cli_rejects_bad_instances"]
timeout_multiplier = 10.0
timeout_constant = 5.0

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "-ra --strict-markers"
markers = ["slow: slow", "model: needs a model"]
EOF

cd "$WORK"
if [[ $SURVIVORS -eq 1 ]]; then
  SFILE="${LLS_MUTATION_SURVIVORS:-$WORK/mutation-score.json}"
  [[ -f "$SFILE" ]] || { echo "mutation.sh: no $SFILE: run without --survivors first" >&2; exit 2; }
  cp "$SFILE" "$WORK/previous-score.json.tmp" && mv "$WORK/previous-score.json.tmp" "$WORK/previous-score.json"
  mapfile -t NAMES < <("$PY" -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1]))["survivors"]))' "$SFILE")
  echo "== mutmut: ${#NAMES[@]} previous survivors (1 worker, timeout ${TIMEOUT}s) =="
  start=$(date +%s)
  set +e
  if [[ ${#NAMES[@]} -gt 0 ]]; then
    timeout "$TIMEOUT" nice -n 10 "$MUTMUT" run --max-children 1 "${NAMES[@]}" > "$WORK/mutmut-survivors.log" 2>&1
  fi
  rc=$?
  if [[ -z "${LLS_MUTATION_SURVIVORS:-}" && "$SCOPE_JSON" != "{}" ]]; then
    echo "   (a module has a function scope: mutants never checked are not run here; run the module to check them)"
  elif [[ -z "${LLS_MUTATION_SURVIVORS:-}" ]]; then  # same snapshot: also mutants never checked or changed since
    timeout "$TIMEOUT" nice -n 10 "$MUTMUT" run --max-children 1 > "$WORK/mutmut-unchecked.log" 2>&1
    rc=$?
  fi
  set -e
  echo "   rc=$rc in $(( $(date +%s) - start )) s"
  MODULES=()
fi
[[ $SCORE_ONLY -eq 1 ]] && MODULES=()
for m in "${MODULES[@]}"; do
  echo "== mutmut: $MOD.$m (1 worker, timeout ${TIMEOUT}s) =="
  start=$(date +%s)
  set +e
  mapfile -t PATS < <(patterns "$m")
  timeout "$TIMEOUT" nice -n 10 "$MUTMUT" run --max-children 1 "${PATS[@]}" > "$WORK/mutmut-$m.log" 2>&1
  rc=$?
  set -e
  echo "   rc=$rc in $(( $(date +%s) - start )) s (log: $WORK/mutmut-$m.log)"
  [[ $rc -eq 124 ]] && echo "   TIMED OUT: rerun to continue (results so far are cached)"
done

# --- score from mutmut's per-file .meta files ------------------------------------------------------------
# With --survivors the previous run's verdicts count for every mutant not re-tested now (killed mutants stay
# killed when tests are only added); the re-tested survivors get their new verdict.
"$PY" - "$DIR" "$THRESHOLD" "$SURVIVORS" "$SCOPE_JSON" "${ALL_MODULES[@]}" <<'EOF'
import fnmatch, json, sys
from pathlib import Path

pkg, threshold, resumed, modules = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1", sys.argv[5:]
mod = pkg.replace("/", ".")  # dotted name of the folder holding the modules (empirical.stages)
scope = json.loads(sys.argv[4])  # module -> mutant name patterns in scope (absent: the whole module)


def module_of(name):
    """The module a mutant belongs to: empirical.stages.build.x_f__mutmut_1 -> build."""
    return name[len(mod) + 1:].split(".")[0]


def in_scope(name):
    pats = scope.get(module_of(name))
    return pats is None or any(fnmatch.fnmatchcase(name, p) for p in pats)


status = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}
prev = json.loads(Path("previous-score.json").read_text()) if resumed else None
verdict = {}  # mutant name -> status
if prev:
    for name, st in prev["verdicts"].items():
        verdict[name] = st
for m in modules:
    meta = Path("mutants") / pkg / f"{m}.py.meta"
    if not meta.exists():
        continue
    for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
        st = status.get(code, "suspicious") if in_scope(name) else "out of scope"
        if prev is None or (name in verdict and st != "not checked"):
            verdict[name] = st
per, total, survivors = {}, {}, []
for name, st in sorted(verdict.items()):
    m = module_of(name)
    per.setdefault(m, {})
    per[m][st] = per[m].get(st, 0) + 1
    total[st] = total.get(st, 0) + 1
    if st not in ("killed", "timeout", "skipped", "out of scope"):
        survivors.append((name, st))


def score(c):
    n = sum(v for k, v in c.items() if k not in ("skipped", "not checked", "out of scope"))
    k = c.get("killed", 0) + c.get("timeout", 0)  # a mutant that makes the tests hang is detected
    return k, n, (100.0 * k / n if n else float("nan"))


for m, c in sorted(per.items()):
    k, n, s = score(c)
    print(f"{mod}.{m:15s} {k:4d}/{n:<4d} killed ({s:5.1f} %)  {dict(sorted(c.items()))}")
k, n, s = score(total)
if total.get("not checked"):
    print(f"not checked (excluded; rerun to check them): {total['not checked']}")
if total.get("out of scope"):
    print(f"out of scope (not run, not in the score; model-driven code): {total['out of scope']}")
print(f"TOTAL {mod}: {k}/{n} mutants killed = {s:.1f} % (threshold {threshold:.0f} %)")
for name, st in survivors:
    if st != "not checked":
        print(f"  {st:11s} {name}")
tmp = Path("mutation-score.json.tmp")
tmp.write_text(json.dumps(
    {"target": mod, "killed": k, "total": n, "score_percent": s, "per_module": per,
     "survivors": [n_ for n_, _ in survivors], "verdicts": verdict}, indent=1) + "\n")
tmp.replace("mutation-score.json")
sys.exit(0 if n and s >= threshold else 1)
EOF
