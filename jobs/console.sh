#!/bin/sh
# The venv's `lakescore` command (`make setup` installs it as $VENV/bin/lakescore). It belongs to no clone: it runs
# the checkout on PYTHONPATH (make and `make shell` set it to theirs), else the one in the current directory, with
# the python beside it; `-P` keeps the current directory off sys.path otherwise.
if [ -z "$PYTHONPATH" ]; then
    if [ -f jobs/cli.py ]; then
        PYTHONPATH=$PWD
        export PYTHONPATH
    else
        echo "lakescore: no lakescore checkout in $PWD and PYTHONPATH is unset; run it inside a clone, in \`make shell\`, or with PYTHONPATH=<clone>" >&2
        exit 2
    fi
fi
exec "$(dirname "$0")/python" -P -m jobs.cli "$@"
