#!/usr/bin/env bash
# One entry point for a fresh machine with Python 3.11 and pip:
#   bash run.sh study [snakemake args]   install what is missing, then run the full study
#                                        (snakemake --cores 8 all on config/config.yaml)
#   bash run.sh test [pytest args]       install what is missing, then run the test suite
#   bash run.sh install                  only install
# Everything goes into .venv/ (created here) unless a virtual environment is already active or
# LH_SYSTEM_PYTHON=1 is set. Versions are pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
if [[ -z "${VIRTUAL_ENV:-}" && "${LH_SYSTEM_PYTHON:-0}" != 1 ]]; then
    [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
    PY=.venv/bin/python
fi

install() {
    local stamp
    stamp="$("$PY" -c 'import sys; print(sys.prefix)')/.learned_halting_installed"
    if [[ -f $stamp && $stamp -nt pyproject.toml && $stamp -nt constraints.txt ]]; then
        return
    fi
    # torch first and alone: the pinned CPU build, so that nothing pulls a CUDA build
    "$PY" -m pip install -q -c constraints.txt torch==2.13.0
    "$PY" -m pip install -q -c constraints.txt -e ".[workflow,test]"
    touch "$stamp"
}

cmd=${1:-}
shift || true
case $cmd in
    install) install ;;
    study) install && exec "$PY" -m snakemake --cores 8 all "$@" ;;
    test) install && exec "$PY" -m pytest -q "$@" ;;
    *)
        sed -n '2,9p' "$0"
        exit 2
        ;;
esac
